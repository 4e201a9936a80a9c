"""A reader's own life on the web pages: pending sign-ups and their confirmation, the
reader's edits (overrides over a config reader), pauses, feedback undo, export and erasure.

Why a store module of its own: these are the writes the *reader* makes, each one a single
transaction keyed on the address, next to the operator's writer (``subscribers.py``'s
sync). The two meet in two rules:

- A ``self-service`` reader belongs to the reader; the config's sync never touches it.
- A ``config`` reader's own edits are kept in ``overrides`` and written over the file's
  values by every sync: the reader's edit wins, field by field, until the reader resets
  it (``reset_overrides``), after which the file's values return with the next sync.

Erasure deletes the row (its feedback and outbox rows go with it by cascade) and keeps
only the sha256 of the normalised address in ``suppressions`` (reason ``erased``), so the
address cannot be subscribed again, by the page or by the operator's file, without
anything of it left in readable form.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import delete, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from pipeline.domain import Reader, Subscriber
from pipeline.store.rows import (
    BOUNCE_EVENTS,
    DELIVERIES,
    DELIVERY_ITEMS,
    PAPERS,
    SUBSCRIBERS,
    SUPPRESSIONS,
    FeedbackRow,
    SubscriberRow,
)
from pipeline.store.subscribers import SubscriberStore, _reader, _record
from pipeline.store.suppression import address_hash, may_resubscribe

# What a reader may change on the manage page: columns, then fields of ``profile``.
EDITABLE_COLUMNS = ("frequency", "send_at", "timezone")
EDITABLE_PROFILE = ("categories", "about", "query", "authors", "trending")
EDITABLE = EDITABLE_COLUMNS + EDITABLE_PROFILE

__all__ = ["EDITABLE", "LifecycleStore", "ReaderRecord", "Signup", "address_hash"]

SignupOutcome = Literal["created", "renewed", "known", "suppressed"]


def apply_overrides(
    record: Mapping[str, Any], overrides: Mapping[str, Any] | None
) -> dict[str, Any]:
    """``record`` (a reader's settings as columns, with ``profile``) with the reader's own
    edits written over it. The fingerprint stays the file's, so a sync writes again only
    when the operator's file changes."""
    out = dict(record)
    if not overrides:
        return out
    profile = dict(out.get("profile") or {})
    for key, value in overrides.items():
        if key in EDITABLE_COLUMNS:
            out[key] = value
        elif key in EDITABLE_PROFILE:
            profile[key] = value
    out["profile"] = profile
    return out


@dataclass(frozen=True, slots=True)
class Signup:
    outcome: SignupOutcome
    nonce: str | None  # set when a confirmation mail is to be sent


@dataclass(frozen=True, slots=True)
class FeedbackMark:
    paper_id: str
    signal: str  # more | less
    created_at: datetime
    title: str | None  # None when the paper is not in the database


@dataclass(frozen=True, slots=True)
class ReaderRecord:
    """What the manage page shows: the reader, their pause, their overrides and presses."""

    reader: Reader
    paused_until: datetime | None
    overrides: Mapping[str, Any]
    feedback: tuple[FeedbackMark, ...]
    suppression: str | None  # the reason the address is suppressed, if it is

    @property
    def suppressed(self) -> bool:
        return self.suppression is not None

    @property
    def may_resubscribe(self) -> bool:
        return may_resubscribe(self.reader.status, self.suppression)


class LifecycleStore(SubscriberStore):
    def suppression(self, email: str) -> str | None:
        """Why ``email`` is on the suppression list, or None."""
        with self.connect() as conn:
            found = conn.scalar(
                select(SUPPRESSIONS.c.reason).where(
                    SUPPRESSIONS.c.address_hash == address_hash(email)
                )
            )
        return str(found) if found is not None else None

    def is_suppressed(self, email: str) -> bool:
        return self.suppression(email) is not None

    # -- sign-up -------------------------------------------------------------------------------
    def add_pending(self, subscriber: Subscriber, *, nonce: str, now: datetime) -> Signup:
        """Record a sign-up from the subscribe page as a ``pending`` self-service reader.

        ``created``/``renewed`` (a pending one again: new settings, new nonce, the old link
        dies): send a confirmation. ``known`` (the address is a reader already) and
        ``suppressed``: change and send nothing; the page answers the same either way.
        """
        if self.is_suppressed(subscriber.email):
            return Signup("suppressed", None)
        record = _record(subscriber)
        c = SUBSCRIBERS.c
        with self.begin() as conn:
            row = conn.execute(select(c.id, c.status).where(c.email == subscriber.email)).first()
            if row is not None and row.status != "pending":
                return Signup("known", None)
            values = {k: v for k, v in record.items() if k != "email"}
            values.update(
                status="pending",
                status_changed_at=now,
                status_reason="subscribe page",
                confirm_nonce=nonce,
                updated_at=now,
            )
            if row is not None:
                conn.execute(update(SUBSCRIBERS).where(c.id == row.id).values(**values))
                return Signup("renewed", nonce)
            insert = postgresql_insert if self.dialect == "postgresql" else sqlite_insert
            result = conn.execute(
                insert(SUBSCRIBERS)
                .values(
                    email=subscriber.email, origin="self-service", created_at=now, version=1,
                    **values,
                )
                .on_conflict_do_nothing(index_elements=[c.email])
                .returning(c.id)  # rowcount is -1 for this on psycopg; RETURNING tells
            )  # fmt: skip
            if result.first() is None:  # a second sign-up of the same address won the race
                return Signup("known", None)
        return Signup("created", nonce)

    def confirm_signup(self, email: str, nonce: str, *, now: datetime, lifetime: timedelta) -> bool:
        """Activate the pending reader ``email`` if ``nonce`` is its current one and the
        sign-up is younger than ``lifetime``. One statement: a link confirms once."""
        c = SUBSCRIBERS.c
        with self.begin() as conn:
            result = conn.execute(
                update(SUBSCRIBERS)
                .where(
                    c.email == email,
                    c.status == "pending",
                    c.confirm_nonce == nonce,
                    c.status_changed_at > now - lifetime,
                )
                .values(
                    status="active",
                    status_changed_at=now,
                    status_reason="confirmed",
                    confirm_nonce=None,
                    version=c.version + 1,
                    updated_at=now,
                )
            )
            return bool(result.rowcount)

    def expire_signups(self, *, now: datetime, lifetime: timedelta) -> int:
        """Delete the sign-ups nobody confirmed within ``lifetime``; how many."""
        c = SUBSCRIBERS.c
        with self.begin() as conn:
            result = conn.execute(
                delete(SUBSCRIBERS).where(
                    c.status == "pending", c.status_changed_at <= now - lifetime
                )
            )
            return int(result.rowcount or 0)

    # -- the manage page -----------------------------------------------------------------------
    def reader_record(self, email: str) -> ReaderRecord | None:
        c = SUBSCRIBERS.c
        with self.connect() as conn:
            row = conn.execute(select(SUBSCRIBERS).where(c.email == email)).first()
            if row is None or row.status == "pending":
                return None
            marks = conn.execute(
                select(FeedbackRow.paper_id, FeedbackRow.signal, FeedbackRow.created_at,
                       PAPERS.c.title)
                .select_from(FeedbackRow)
                .outerjoin(PAPERS, PAPERS.c.id == FeedbackRow.paper_id)
                .where(FeedbackRow.subscriber_id == row.id)
                .order_by(FeedbackRow.created_at.desc(), FeedbackRow.id.desc())
            ).all()  # fmt: skip
        return ReaderRecord(
            reader=_reader(row),
            paused_until=_utc(row.paused_until),
            overrides=dict(row.overrides or {}),
            feedback=tuple(
                FeedbackMark(m.paper_id, m.signal, m.created_at, m.title) for m in marks
            ),
            suppression=self.suppression(email),
        )

    def edit_reader(self, email: str, changes: Mapping[str, Any], *, now: datetime) -> bool:
        """Write the reader's edits (keys of ``EDITABLE``). A ``config`` reader's edits are
        also kept in ``overrides`` (a sync writes them over the file's values). Bumps the
        version when anything changed; False when nothing did (or no such reader)."""
        unknown = set(changes) - set(EDITABLE)
        if unknown:
            raise ValueError(f"not editable on the manage page: {sorted(unknown)}")
        with self.write() as s:
            row = s.scalar(select(SubscriberRow).where(SubscriberRow.email == email))
            if row is None or row.status == "pending":
                return False
            profile = dict(row.profile or {})
            current = {k: getattr(row, k) for k in EDITABLE_COLUMNS} | {
                k: profile.get(k) for k in EDITABLE_PROFILE
            }
            edited = {k: v for k, v in changes.items() if _norm(current[k]) != _norm(v)}
            if not edited:
                return False
            for key, value in edited.items():
                if key in EDITABLE_COLUMNS:
                    setattr(row, key, value)
                else:
                    profile[key] = value
            row.profile = profile
            if row.origin == "config":
                row.overrides = dict(row.overrides or {}) | edited
            row.version += 1
            row.updated_at = now
            return True

    def reset_overrides(self, email: str, *, now: datetime) -> bool:
        """Drop a config reader's own edits. The row keeps them until the next sync, which
        writes the file's values (the cleared fingerprint makes it write)."""
        with self.write() as s:
            row = s.scalar(select(SubscriberRow).where(SubscriberRow.email == email))
            if row is None or not row.overrides:
                return False
            row.overrides = None
            row.fingerprint = ""
            row.version += 1
            row.updated_at = now
            return True

    def pause(self, email: str, until: datetime | None, *, now: datetime) -> bool:
        """No digest is planned for ``email`` before ``until`` (None: resume now)."""
        with self.write() as s:
            row = s.scalar(select(SubscriberRow).where(SubscriberRow.email == email))
            if row is None or row.status == "pending":
                return False
            row.paused_until = until
            row.version += 1
            row.updated_at = now
            return True

    def undo_feedback(self, email: str, paper_id: str, *, now: datetime) -> bool:
        """Forget the reader's "more/less" press on ``paper_id``."""
        with self.write() as s:
            row = s.scalar(select(SubscriberRow).where(SubscriberRow.email == email))
            if row is None:
                return False
            result = s.execute(
                delete(FeedbackRow).where(
                    FeedbackRow.subscriber_id == row.id, FeedbackRow.paper_id == paper_id
                )
            )
            if not getattr(result, "rowcount", 0):
                return False
            row.version += 1
            row.updated_at = now
            return True

    def resubscribe_reader(self, email: str, *, now: datetime) -> bool:
        """The reader's own way back after an unsubscribe (by link or by mail)."""
        return self.resubscribe(email, now=now, reason="manage page")

    # -- the reader's data ---------------------------------------------------------------------
    def export_reader(self, email: str) -> dict[str, Any] | None:
        """Everything stored about ``email``, JSON-able (the GDPR-style download)."""
        record = self.reader_record(email)
        if record is None:
            return None
        reader = record.reader
        sub = reader.subscriber
        c, d, i = SUBSCRIBERS.c, DELIVERIES.c, DELIVERY_ITEMS.c
        with self.connect() as conn:
            row = conn.execute(select(SUBSCRIBERS).where(c.id == reader.id)).one()
            deliveries = conn.execute(
                select(d.id, d.period_key, d.status, d.sent_at, d.created_at)
                .where(d.subscriber_id == reader.id)
                .order_by(d.created_at)
            ).all()
            items: dict[int, list[str]] = {}
            for item in conn.execute(
                select(i.delivery_id, i.paper_id)
                .where(i.delivery_id.in_([x.id for x in deliveries]))
                .order_by(i.delivery_id, i.rank)
            ):
                items.setdefault(item.delivery_id, []).append(item.paper_id)
        return {
            "email": sub.email,
            "name": sub.name,
            "status": reader.status,
            "origin": reader.origin,
            "subscribed_at": _iso(row.created_at),
            "status_changed_at": _iso(row.status_changed_at),
            "settings": {
                "frequency": sub.schedule.frequency,
                "send_at": sub.schedule.send_at.strftime("%H:%M"),
                "timezone": sub.schedule.timezone,
                "on_empty": sub.on_empty,
                "interests": dict(row.profile or {}),
            },
            "your_overrides": dict(record.overrides),
            "paused_until": _iso(record.paused_until),
            "feedback": [
                {"paper": m.paper_id, "signal": m.signal, "at": _iso(m.created_at)}
                for m in record.feedback
            ],
            "digests": [
                {
                    "period": x.period_key,
                    "status": x.status,
                    "sent_at": _iso(x.sent_at),
                    "papers": items.get(x.id, []),
                }
                for x in deliveries
            ],
        }

    def erase_reader(self, email: str, *, now: datetime) -> bool:
        """Delete the reader and all their rows; keep only the address hash as an
        ``erased`` suppression (an existing suppression keeps its reason)."""
        digest = address_hash(email)
        insert = postgresql_insert if self.dialect == "postgresql" else sqlite_insert
        with self.begin() as conn:
            found = conn.scalar(select(SUBSCRIBERS.c.id).where(SUBSCRIBERS.c.email == email))
            conn.execute(
                insert(SUPPRESSIONS)
                .values(address_hash=digest, reason="erased", detail=None, created_at=now)
                .on_conflict_do_nothing(index_elements=[SUPPRESSIONS.c.address_hash])
            )
            if found is None:
                return False
            # Feedback, outbox rows, their items and reservations go by ON DELETE CASCADE;
            # bounce events keep only their address hash.
            conn.execute(
                update(BOUNCE_EVENTS)
                .where(BOUNCE_EVENTS.c.subscriber_id == found)
                .values(subscriber_id=None)
            )
            conn.execute(delete(SUBSCRIBERS).where(SUBSCRIBERS.c.id == found))
        return True


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _iso(value: datetime | None) -> str | None:
    value = _utc(value)
    return value.isoformat(timespec="seconds") if value is not None else None


def _norm(value: Any) -> Any:
    """Compare list settings as sorted lists (JSON gives lists, forms tuples, and the order
    of categories or authors carries no meaning), and an empty text as no text."""
    if isinstance(value, list | tuple):
        return sorted(value)
    if value == "":
        return None
    return value
