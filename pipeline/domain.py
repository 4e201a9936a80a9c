"""Domain values shared by the stages.

Plain frozen dataclasses: no I/O, no ORM, no library types. Every stage takes
and returns these, and only the store converts them to and from rows. All
datetimes are timezone-aware UTC unless a field says otherwise.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, time
from typing import Literal, Protocol, TypeAlias

AnnounceType = Literal["new", "cross", "replace", "replace-cross"]


@dataclass(frozen=True, slots=True)
class Paper:
    """One paper as a source saw it, normalised.

    ``id`` is the canonical identity: the arXiv id without version
    (``2305.18290``, ``astro-ph/0601001``) when one is known; else
    ``doi:<doi>``; else ``url:<link>``; else ``sha:<content hash>``.
    """

    id: str
    title: str
    abstract: str = ""
    authors: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()  # primary first
    url: str | None = None  # abstract / landing page
    pdf_url: str | None = None
    hf_url: str | None = None
    version: int | None = None
    published: datetime | None = None
    announced: datetime | None = None
    announce_type: AnnounceType | None = None
    doi: str | None = None
    journal_ref: str | None = None
    upvotes: int | None = None
    github_repo: str | None = None
    github_stars: int | None = None
    tldr: str | None = None  # a source's own one-line summary (Hugging Face's ai_summary)
    # Set by the store: when Paperpost first saw the paper, and from where.
    first_seen: datetime | None = None
    sources: tuple[str, ...] = ()

    @property
    def primary_category(self) -> str | None:
        return self.categories[0] if self.categories else None


@dataclass(frozen=True, slots=True)
class Profile:
    """What one subscriber is interested in (config plus feedback from links)."""

    query: str | None = None
    categories: tuple[str, ...] = ()
    authors: tuple[str, ...] = ()
    about: str | None = None
    like: tuple[str, ...] = ()  # canonical paper ids
    dislike: tuple[str, ...] = ()  # from "less like this" links
    exclude: str | None = None  # a query; matching papers are removed
    max_items: int = 15
    min_score: float = 0.0
    trending: int = 0  # N most upvoted papers of the period, regardless of interests


@dataclass(frozen=True, slots=True)
class Schedule:
    """When a subscriber receives digests, in their own time zone."""

    frequency: str  # "daily" | "weekdays" | "weekly:mon" | "cron:<5 fields>"
    send_at: time  # local wall-clock time
    timezone: str  # IANA name


@dataclass(frozen=True, slots=True)
class Period:
    """One schedule period of one subscriber: the outbox key and its due instant."""

    key: str  # e.g. "2026-11-23" (local date) or "2026-W48" (ISO week)
    due_at: datetime  # UTC


@dataclass(frozen=True, slots=True)
class Subscriber:
    email: str  # normalised address (lower-cased domain, IDNA-decoded)
    name: str | None
    schedule: Schedule
    profile: Profile
    on_empty: Literal["skip", "send"] = "skip"


@dataclass(frozen=True, slots=True)
class Reader:
    """A subscriber as the database holds it, the source of truth for every use case.

    ``version`` goes up with every change of the settings in ``subscriber``; an outbox row
    records the version it was planned under. ``origin`` says who may change them:
    ``config`` (the operator's file, through its sync), ``import`` (``paperpost subscribers
    import``) or ``self-service`` (the reader, on the web pages).
    """

    id: int
    version: int
    origin: str
    status: str  # active | unsubscribed | removed
    subscriber: Subscriber

    @property
    def email(self) -> str:
        return self.subscriber.email


@dataclass(frozen=True, slots=True)
class MatchItem:
    """One ranked paper for one subscriber, with the one-line reason."""

    paper_id: str
    score: float
    reason: str
    trending: bool = False


@dataclass(frozen=True, slots=True)
class DigestItem:
    paper: Paper
    score: float
    reason: str
    more_url: str | None = None  # signed "more like this" link
    less_url: str | None = None  # signed "less like this" link


@dataclass(frozen=True, slots=True)
class Digest:
    """Everything a template needs for one subscriber's digest of one period."""

    recipient_email: str
    recipient_name: str | None
    period_key: str
    period_label: str  # human text, e.g. "Monday 23 November 2026"
    generated_at: datetime
    items: tuple[DigestItem, ...]
    trending: tuple[DigestItem, ...] = ()
    unsubscribe_url: str | None = None
    list_name: str = "Paperpost"
    manage_url: str | None = None  # the reader's signed manage page
    reason_for_receiving: str = ""
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RenderedDigest:
    subject: str
    html: str
    text: str


@dataclass(frozen=True, slots=True)
class MessageHeaders:
    """Header values for one digest message; every one is treated as hostile."""

    from_addr: str  # "Name <addr@domain>" or "addr@domain"
    to_addr: str
    to_name: str | None
    subject: str
    message_id: str  # "<...@domain>"
    date: datetime
    list_id: str  # "Paperpost digest <digest.lab.example>"
    unsubscribe_url: str | None  # https URL for List-Unsubscribe (+ one-click)
    unsubscribe_mailto: str | None  # mailto:... for List-Unsubscribe


@dataclass(frozen=True, slots=True)
class Envelope:
    """What a transport sends: SMTP envelope plus the finished message bytes."""

    sender: str
    recipient: str
    data: bytes
    message_id: str


# Called by a transport once per message, just before the point of no return; True means
# "go ahead". The outbox commits the row's ``sending`` mark here (see ``Mailer.send``).
Commit: TypeAlias = Callable[[], Awaitable[bool]]


class Mailer(Protocol):
    """A transport. ``send`` returns the server's reply text (or a Maildir path).

    It raises ``TransientDeliveryError``, ``PermanentDeliveryError``,
    ``BatchAbortedError`` or ``AmbiguousDeliveryError`` (see ``pipeline.errors``).

    ``commit``, when given, is awaited exactly once per send, immediately before the
    bytes that may deliver the message are written (SMTP: the message and its final
    "." after the 354 reply to DATA; Maildir: the link into ``new/``), and never again
    on a retry inside the same send. Everything before it (waiting for a connection,
    the pacer, EHLO, MAIL, RCPT) cannot have delivered anything. If it returns False
    the transport delivers nothing and raises ``ClaimLostError``. A
    ``BatchAbortedError`` always means that nothing of this message was accepted.
    """

    async def send(self, envelope: Envelope, *, commit: Commit | None = None) -> str: ...

    async def aclose(self) -> None: ...
