"""ORM rows. Only the store package sees these; it converts them to domain values."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar, cast

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UtcDateTime(TypeDecorator[datetime]):
    """Stores aware UTC datetimes; SQLite returns naive ones, so re-attach UTC on the way out."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime reached the database; use aware UTC datetimes")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UtcDateTime}


class SourceRow(Base):
    __tablename__ = "sources"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    url: Mapped[str] = mapped_column(Text)
    etag: Mapped[str | None] = mapped_column(Text)
    last_modified: Mapped[str | None] = mapped_column(String(64))
    last_attempt: Mapped[datetime | None]
    last_success: Mapped[datetime | None]
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    entries_seen: Mapped[int] = mapped_column(Integer, default=0)


class PaperRow(Base):
    __tablename__ = "papers"

    id: Mapped[str] = mapped_column(String(300), primary_key=True)
    title: Mapped[str] = mapped_column(Text)
    abstract: Mapped[str] = mapped_column(Text, default="")
    authors: Mapped[list[str]] = mapped_column(JSON, default=list)
    categories: Mapped[list[str]] = mapped_column(JSON, default=list)
    url: Mapped[str | None] = mapped_column(Text)
    pdf_url: Mapped[str | None] = mapped_column(Text)
    hf_url: Mapped[str | None] = mapped_column(Text)
    version: Mapped[int | None] = mapped_column(Integer)
    published: Mapped[datetime | None]
    announced: Mapped[datetime | None]
    announce_type: Mapped[str | None] = mapped_column(String(16))
    doi: Mapped[str | None] = mapped_column(String(300))
    journal_ref: Mapped[str | None] = mapped_column(Text)
    upvotes: Mapped[int | None] = mapped_column(Integer)
    github_repo: Mapped[str | None] = mapped_column(Text)
    github_stars: Mapped[int | None] = mapped_column(Integer)
    tldr: Mapped[str | None] = mapped_column(Text)  # a source's own one-line summary
    sources: Mapped[list[str]] = mapped_column(JSON, default=list)
    first_seen: Mapped[datetime] = mapped_column(index=True)
    updated_at: Mapped[datetime]


class PaperVersionRow(Base):
    __tablename__ = "paper_versions"

    paper_id: Mapped[str] = mapped_column(
        ForeignKey("papers.id", ondelete="CASCADE"), primary_key=True
    )
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    seen_at: Mapped[datetime]


class SubscriberRow(Base):
    __tablename__ = "subscribers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str | None] = mapped_column(Text)
    # active | pending (signed up on the subscribe page, not yet confirmed) | unsubscribed
    # (by link or mail; wins over the config) | suppressed (hard bounce, repeated soft
    # bounces, complaint) | removed (gone from the config)
    status: Mapped[str] = mapped_column(String(16), default="active")
    status_changed_at: Mapped[datetime | None]
    status_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    # The reader's settings: the source of truth for planning, delivery, preview and explain.
    # config (the operator's file; its sync is the one writer) | import (paperpost subscribers
    # import) | self-service (the subscribe page)
    origin: Mapped[str] = mapped_column(String(16), default="config")
    version: Mapped[int] = mapped_column(Integer, default=1)  # bumped by every change below
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    frequency: Mapped[str] = mapped_column(String(128), default="daily")
    send_at: Mapped[str] = mapped_column(String(5), default="08:00")  # local HH:MM
    on_empty: Mapped[str] = mapped_column(String(8), default="skip")
    # query, categories, authors, about, like, exclude, max_items, min_score, trending
    profile: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # sha256 of the settings above: a sync writes (and bumps the version) only on a change
    fingerprint: Mapped[str] = mapped_column(String(64), default="")
    updated_at: Mapped[datetime | None]
    paused_until: Mapped[datetime | None]  # no digest is planned before this instant
    # The reader's own edits (manage page) over a config-origin reader's settings
    overrides: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # Random, set when a confirmation mail is sent; cleared on confirmation (single use)
    confirm_nonce: Mapped[str | None] = mapped_column(String(64))


class FeedbackRow(Base):
    __tablename__ = "feedback"
    __table_args__ = (
        UniqueConstraint("subscriber_id", "paper_id"),
        # Planning counts other readers' presses on the window's papers (co-readers).
        Index("ix_feedback_paper_id", "paper_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscribers.id", ondelete="CASCADE"))
    paper_id: Mapped[str] = mapped_column(String(300))
    signal: Mapped[str] = mapped_column(String(8))  # more | less
    created_at: Mapped[datetime]


class DeliveryRow(Base):
    """The outbox: one row per (subscriber, schedule period), written before anything is sent."""

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("subscriber_id", "period_key"),
        Index("ix_deliveries_status_next", "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscribers.id", ondelete="CASCADE"))
    period_key: Mapped[str] = mapped_column(String(32))
    # pending -> claimed -> sending -> sent | deferred | failed | ambiguous; also skipped, cancelled
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime]
    window_start: Mapped[datetime]
    window_end: Mapped[datetime]
    message_id: Mapped[str] = mapped_column(String(255))
    last_error: Mapped[str | None] = mapped_column(Text)
    server_reply: Mapped[str | None] = mapped_column(Text)
    claimed_by: Mapped[str | None] = mapped_column(String(128))
    claimed_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]
    item_count: Mapped[int] = mapped_column(Integer, default=0)
    subscriber_version: Mapped[int] = mapped_column(Integer, default=0)  # planned under it


class DeliveryItemRow(Base):
    """The papers chosen for one delivery, frozen when planned: a retry resends the same."""

    __tablename__ = "delivery_items"

    delivery_id: Mapped[int] = mapped_column(
        ForeignKey("deliveries.id", ondelete="CASCADE"), primary_key=True
    )
    rank: Mapped[int] = mapped_column(Integer, primary_key=True)
    paper_id: Mapped[str] = mapped_column(String(300))
    score: Mapped[float] = mapped_column(Float)
    reason: Mapped[str] = mapped_column(Text)
    trending: Mapped[int] = mapped_column(Integer, default=0)


class SentItemRow(Base):
    """(subscriber, paper) reserved by a delivery: the database itself forbids a second one."""

    __tablename__ = "sent_items"

    subscriber_id: Mapped[int] = mapped_column(
        ForeignKey("subscribers.id", ondelete="CASCADE"), primary_key=True
    )
    paper_id: Mapped[str] = mapped_column(String(300), primary_key=True)
    delivery_id: Mapped[int] = mapped_column(
        ForeignKey("deliveries.id", ondelete="CASCADE"), index=True
    )


class SuppressionRow(Base):
    """An address that is never mailed again, kept only as the sha256 of its normalised form
    (so an erased reader leaves no address behind)."""

    __tablename__ = "suppressions"

    address_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    # hard_bounce | soft_bounces | complaint | unsubscribe_mail | erased | operator
    reason: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]


class BounceEventRow(Base):
    """One bounce, complaint or mailed unsubscribe read from the bounce mailbox. A report
    is recorded once per address (``report_id`` is the report's Message-ID)."""

    __tablename__ = "bounce_events"
    __table_args__ = (
        UniqueConstraint("report_id", "address_hash", name="uq_bounce_events_report_id"),
        Index("ix_bounce_events_address_hash", "address_hash", "received_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    address_hash: Mapped[str] = mapped_column(String(64))
    subscriber_id: Mapped[int | None] = mapped_column(Integer)  # no FK: erasure keeps events
    delivery_id: Mapped[int | None] = mapped_column(BigInteger().with_variant(Integer, "sqlite"))
    kind: Mapped[str] = mapped_column(String(16))  # hard | soft | complaint | unsubscribe
    detail: Mapped[str | None] = mapped_column(Text)
    report_id: Mapped[str | None] = mapped_column(String(255))
    received_at: Mapped[datetime]


class MetaRow(Base):
    """Facts about this installation, written once (the random installation id)."""

    __tablename__ = "meta"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class LeaseRow(Base):
    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[datetime]


class RunRow(Base):
    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))  # ingest | dispatch
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    summary: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


# Core handles on the tables, for the statements written without the ORM (one place).
DELIVERIES = cast("Table", DeliveryRow.__table__)
DELIVERY_ITEMS = cast("Table", DeliveryItemRow.__table__)
SENT_ITEMS = cast("Table", SentItemRow.__table__)
SUBSCRIBERS = cast("Table", SubscriberRow.__table__)
PAPERS = cast("Table", PaperRow.__table__)
PAPER_VERSIONS = cast("Table", PaperVersionRow.__table__)
META = cast("Table", MetaRow.__table__)
SUPPRESSIONS = cast("Table", SuppressionRow.__table__)
BOUNCE_EVENTS = cast("Table", BounceEventRow.__table__)
