"""An in-memory WebBackend for HTTP-level tests of pipeline.web.app."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pipeline.errors import StoreError
from pipeline.web.readers import LinkedDigest


@dataclass
class FakeClock:
    now: datetime = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@dataclass
class FakeBackend:
    """Subscribers, suppressions and feedback in dicts; ``broken`` makes writes fail."""

    active: set[str] = field(default_factory=set)
    unsubscribed: dict[str, datetime] = field(default_factory=dict)
    feedback: dict[tuple[str, str], str] = field(default_factory=dict)
    previews: dict[str, str] = field(default_factory=dict)
    status: dict[str, object] = field(default_factory=lambda: {"ok": True, "database": "ok"})
    metrics: str = "# TYPE paperpost_digests_sent_total counter\npaperpost_digests_sent_total 3\n"
    broken: bool = False
    calls: list[str] = field(default_factory=list)
    # What link tokens resolve to: reader ids to addresses, (reader id, outbox row id) to
    # the digest's papers; ``lookups`` records each resolution (reads, not ``calls``).
    readers: dict[int, str] = field(default_factory=dict)
    digests: dict[tuple[int, int], tuple[tuple[str, str], ...]] = field(default_factory=dict)
    lookups: list[str] = field(default_factory=list)
    titles: dict[str, str] = field(default_factory=dict)

    def paper_title(self, paper_id: str) -> str | None:
        return self.titles.get(paper_id)

    def reader_email(self, subscriber_id: int) -> str | None:
        self.lookups.append(f"reader {subscriber_id}")
        return self.readers.get(subscriber_id)

    def linked_digest(self, subscriber_id: int, delivery_id: int) -> LinkedDigest | None:
        self.lookups.append(f"digest {subscriber_id} {delivery_id}")
        papers = self.digests.get((subscriber_id, delivery_id))
        email = self.readers.get(subscriber_id)
        return LinkedDigest(email, papers) if papers is not None and email else None

    def unsubscribe(self, email: str, *, now: datetime) -> bool:
        self.calls.append(f"unsubscribe {email}")
        if self.broken:
            raise StoreError("database is locked")
        was_active = email in self.active
        self.active.discard(email)
        self.unsubscribed.setdefault(email, now)
        return was_active

    def record_feedback(self, email: str, paper_id: str, signal: str, *, now: datetime) -> bool:
        self.calls.append(f"feedback {email} {paper_id} {signal}")
        if self.broken:
            raise StoreError("database is locked")
        if email not in self.active and email not in self.unsubscribed:
            return False
        self.feedback[(email, paper_id)] = signal
        return True

    def render_preview(self, email: str) -> str | None:
        self.calls.append(f"preview {email}")
        return self.previews.get(email)

    def health(self) -> Mapping[str, object]:
        if self.broken:
            raise StoreError("database unreachable at postgresql://paperpost:s3cret@db/x")
        return self.status

    def metrics_text(self) -> str:
        return self.metrics
