"""The port the subscribe and manage pages use, and the values that cross it.

Like ``WebBackend`` (``app.py``), the daemon implements it over the application layer and
tests may hand in their own. The web side only parses forms into ``ReaderForm`` (plain
strings, nothing trusted) and renders what comes back; validation against the config's
rules (address, time zone, frequency, query syntax, permitted domains) is the backend's,
which answers bad input with :class:`FormError` listing every problem.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from pipeline.errors import PaperpostError


class FormError(PaperpostError):
    """The form's values are not acceptable; ``problems`` are shown to the reader."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(self.problems))


@dataclass(frozen=True, slots=True)
class ReaderForm:
    """A subscribe or preferences form as submitted (every value is hostile)."""

    categories: tuple[str, ...] = ()
    about: str = ""
    query: str = ""
    authors: str = ""  # one per line or comma-separated
    trending_only: bool = False
    frequency: str = "daily"
    send_at: str = "08:00"
    timezone: str = "UTC"


@dataclass(frozen=True, slots=True)
class Press:
    """One "more/less like this" press the reader may undo."""

    paper_id: str
    signal: str  # more | less
    title: str | None
    at: datetime


@dataclass(frozen=True, slots=True)
class ManagedReader:
    """What the manage page shows about the reader whose signed link was opened."""

    email: str
    status: str  # active | unsubscribed | suppressed | removed
    origin: str  # config | import | self-service
    form: ReaderForm  # the settings in force
    overridden: tuple[str, ...]  # fields the reader changed over the operator's file
    paused_until: datetime | None
    presses: tuple[Press, ...]
    can_resubscribe: bool


@dataclass(frozen=True, slots=True)
class LinkedDigest:
    """What a digest's links resolve to: the reader's current address and the papers the
    outbox row carried, ``(paper id, title)`` in position order (a feedback link's
    position ``n`` is ``papers[n - 1]``)."""

    email: str
    papers: tuple[tuple[str, str], ...]


class ReaderBackend(Protocol):
    """What the subscribe and manage pages need. Blocking; run in the thread pool."""

    def request_signup(
        self, email: str, form: ReaderForm, *, now: datetime
    ) -> Callable[[], None] | None:
        """Validate, record a pending sign-up and mail its confirmation link. Raises
        ``FormError`` for bad input; a known or suppressed address changes and sends
        nothing but returns normally (the page must not tell them apart)."""

    def confirm_signup(self, email: str, nonce: str, *, now: datetime) -> bool:
        """Activate a pending sign-up whose current nonce is ``nonce``; False otherwise."""

    def reader_email(self, subscriber_id: int) -> str | None:
        """The address of the reader a link token names by id (any status); None if none."""

    def linked_digest(self, subscriber_id: int, delivery_id: int) -> LinkedDigest | None:
        """The reader and papers of the outbox row a digest token names; None when the row
        is gone or is not that reader's."""

    def managed_reader(self, email: str, *, now: datetime) -> ManagedReader | None:
        """The reader's page, or None for an unknown (or erased) address."""

    def edit_reader(self, email: str, form: ReaderForm, *, now: datetime) -> bool:
        """Apply the preferences form (``FormError`` for bad input); whether anything changed."""

    def reset_overrides(self, email: str, *, now: datetime) -> bool:
        """Drop a config reader's own edits: the operator's file applies again."""

    def pause(self, email: str, weeks: int, *, now: datetime) -> bool:
        """Pause digests for ``weeks`` weeks (0 resumes now)."""

    def undo_feedback(self, email: str, paper_id: str, *, now: datetime) -> bool:
        """Forget one "more/less" press."""

    def resubscribe(self, email: str, *, now: datetime) -> bool:
        """Back after an unsubscribe (never past a suppression)."""

    def export_reader(self, email: str) -> Mapping[str, object] | None:
        """Everything stored about the reader, JSON-able."""

    def erase_reader(self, email: str, *, now: datetime) -> bool:
        """Delete the reader; keep only the address hash as a suppression."""


@dataclass(frozen=True, slots=True)
class SubscribeSettings:
    """The operator's choices for the subscribe page (``[web]``)."""

    enabled: bool = True
    per_address_per_hour: int = 3
    per_client_per_hour: int = 20
    confirm_hours: int = 48  # a confirmation link's lifetime (the store checks it too)
    rate_limit_storage: str = "memory://"  # a ``limits`` storage URI (memory or Redis)
