"""Subscribers (synced from the config), the suppression list and reader feedback."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from pipeline.domain import Subscriber
from pipeline.store.base import StoreBase
from pipeline.store.rows import FeedbackRow, SubscriberRow


@dataclass(frozen=True)
class SubscriberState:
    id: int
    email: str
    name: str | None
    status: str  # active | unsubscribed | removed
    status_changed_at: datetime | None


@dataclass(frozen=True)
class SyncStats:
    added: int
    updated: int
    removed: int
    suppressed: int  # in the config but unsubscribed by link


class SubscriberStore(StoreBase):
    def sync_subscribers(self, subscribers: Sequence[Subscriber], *, now: datetime) -> SyncStats:
        """Make the table match the config. An unsubscribe by link wins over the config."""
        added = updated = removed = suppressed = 0
        wanted = {s.email: s for s in subscribers}
        with self.write() as s:
            rows = {r.email: r for r in s.scalars(select(SubscriberRow))}
            for email, sub in wanted.items():
                row = rows.get(email)
                if row is None:
                    s.add(
                        SubscriberRow(email=email, name=sub.name, status="active", created_at=now)
                    )
                    added += 1
                    continue
                if row.name != sub.name:
                    row.name = sub.name
                    updated += 1
                if row.status == "removed":
                    row.status, row.status_changed_at, row.status_reason = "active", now, "config"
                    updated += 1
                elif row.status == "unsubscribed":
                    suppressed += 1
            for email, row in rows.items():
                if email not in wanted and row.status == "active":
                    row.status, row.status_changed_at, row.status_reason = "removed", now, "config"
                    removed += 1
        return SyncStats(added=added, updated=updated, removed=removed, suppressed=suppressed)

    def subscriber_states(self) -> dict[str, SubscriberState]:
        with self.read() as s:
            return {r.email: _state(r) for r in s.scalars(select(SubscriberRow))}

    def subscriber_state(self, email: str) -> SubscriberState | None:
        with self.read() as s:
            row = s.scalar(select(SubscriberRow).where(SubscriberRow.email == email))
            return _state(row) if row else None

    def unsubscribe(self, email: str, *, now: datetime, reason: str = "link") -> bool:
        """Put ``email`` on the suppression list. Idempotent; returns whether it was active."""
        with self.write() as s:
            row = s.scalar(select(SubscriberRow).where(SubscriberRow.email == email))
            if row is None:
                s.add(
                    SubscriberRow(
                        email=email,
                        status="unsubscribed",
                        status_changed_at=now,
                        status_reason=reason,
                        created_at=now,
                    )
                )
                return False
            if row.status == "unsubscribed":
                return False
            was_active = row.status == "active"
            row.status, row.status_changed_at, row.status_reason = "unsubscribed", now, reason
            return was_active

    def resubscribe(self, email: str, *, now: datetime) -> bool:
        """Lift a suppression explicitly (``paperpost resubscribe``). Returns whether it changed."""
        with self.write() as s:
            row = s.scalar(select(SubscriberRow).where(SubscriberRow.email == email))
            if row is None or row.status != "unsubscribed":
                return False
            row.status, row.status_changed_at, row.status_reason = "active", now, "resubscribe"
            return True

    def record_feedback(self, email: str, paper_id: str, signal: str, *, now: datetime) -> bool:
        """Record "more"/"less" for one paper; the latest signal for a paper wins."""
        if signal not in ("more", "less"):
            raise ValueError(f"feedback signal must be 'more' or 'less', found {signal!r}")
        with self.write() as s:
            sub = s.scalar(select(SubscriberRow).where(SubscriberRow.email == email))
            if sub is None:
                return False
            # One statement, so two presses at once cannot both insert (unique key).
            upsert = (postgresql_insert if self.dialect == "postgresql" else sqlite_insert)(
                FeedbackRow
            ).values(subscriber_id=sub.id, paper_id=paper_id, signal=signal, created_at=now)
            s.execute(
                upsert.on_conflict_do_update(
                    index_elements=[FeedbackRow.subscriber_id, FeedbackRow.paper_id],
                    set_={"signal": signal, "created_at": now},
                )
            )
            return True

    def feedback(self, subscriber_ids: Sequence[int]) -> dict[int, tuple[list[str], list[str]]]:
        """{subscriber id: (liked paper ids, disliked paper ids)} in the order given."""
        out: dict[int, tuple[list[str], list[str]]] = {i: ([], []) for i in subscriber_ids}
        with self.read() as s:
            for i in range(0, len(subscriber_ids), 500):
                chunk = list(subscriber_ids[i : i + 500])
                rows = s.scalars(
                    select(FeedbackRow)
                    .where(FeedbackRow.subscriber_id.in_(chunk))
                    .order_by(FeedbackRow.subscriber_id, FeedbackRow.created_at, FeedbackRow.id)
                )
                for row in rows:
                    likes, dislikes = out[row.subscriber_id]
                    (likes if row.signal == "more" else dislikes).append(row.paper_id)
        return out


def _state(row: SubscriberRow) -> SubscriberState:
    return SubscriberState(
        id=row.id,
        email=row.email,
        name=row.name,
        status=row.status,
        status_changed_at=row.status_changed_at,
    )
