"""The outbox: the delivery ledger behind "nothing lost, nothing twice".

Life of a row: ``pending`` (planned, items frozen) -> ``claimed`` (owned by one sender,
nothing handed to a transport yet) -> ``sending`` (committed just before the hand-off)
-> ``sent`` | ``deferred`` (4xx, retried later with the same Message-ID) | ``failed``
(5xx or too old) | ``ambiguous`` (the connection broke after the final "."). Also
``skipped`` (an empty period under the skip policy) and ``cancelled`` (unsubscribed
before the claim). A crash leaves rows ``claimed`` (safe to resend: nothing left the
process) or ``sending`` (handled by the ambiguous-delivery policy).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from pipeline.domain import Paper
from pipeline.store.base import StoreBase
from pipeline.store.papers import paper_from_row
from pipeline.store.rows import (
    DeliveryItemRow,
    DeliveryRow,
    PaperRow,
    SentItemRow,
    SubscriberRow,
)

OPEN = ("pending", "claimed", "sending", "deferred")
# Rows whose window counts as covered: their papers were sent, are on their way, or were
# considered and nothing matched.
COVERED = ("pending", "claimed", "sending", "deferred", "sent", "ambiguous", "skipped")


@dataclass(frozen=True)
class PlannedItem:
    paper_id: str
    score: float
    reason: str
    trending: bool = False


@dataclass(frozen=True)
class DeliveryItem:
    paper: Paper
    score: float
    reason: str
    trending: bool


@dataclass(frozen=True)
class Delivery:
    id: int
    subscriber_id: int
    email: str
    name: str | None
    period_key: str
    status: str
    attempts: int
    message_id: str
    window_start: datetime
    window_end: datetime
    created_at: datetime
    items: tuple[DeliveryItem, ...]


class OutboxStore(StoreBase):
    # -- planning ------------------------------------------------------------------------------
    def periods_present(self, pairs: Collection[tuple[int, str]]) -> set[tuple[int, str]]:
        """Which (subscriber id, period key) already have an outbox row."""
        if not pairs:
            return set()
        ids = sorted({sid for sid, _ in pairs})
        found: set[tuple[int, str]] = set()
        with self.read() as s:
            for i in range(0, len(ids), 500):
                rows = s.execute(
                    select(DeliveryRow.subscriber_id, DeliveryRow.period_key).where(
                        DeliveryRow.subscriber_id.in_(ids[i : i + 500])
                    )
                )
                found.update((sid, key) for sid, key in rows if (sid, key) in pairs)
        return found

    def last_window_ends(self, subscriber_ids: Sequence[int]) -> dict[int, datetime]:
        """End of each subscriber's last covered window (absent: never had a digest)."""
        out: dict[int, datetime] = {}
        with self.read() as s:
            for i in range(0, len(subscriber_ids), 500):
                rows = s.execute(
                    select(DeliveryRow.subscriber_id, func.max(DeliveryRow.window_end))
                    .where(
                        DeliveryRow.subscriber_id.in_(subscriber_ids[i : i + 500]),
                        DeliveryRow.status.in_(COVERED),
                    )
                    .group_by(DeliveryRow.subscriber_id)
                )
                for sid, end in rows:
                    out[sid] = _aware(end)
        return out

    def reserved_papers(
        self, subscriber_ids: Sequence[int], paper_ids: Collection[str]
    ) -> dict[int, set[str]]:
        """Papers among ``paper_ids`` already sent (or reserved) to each subscriber."""
        out: dict[int, set[str]] = {}
        if not paper_ids:
            return out
        papers = list(paper_ids)
        with self.read() as s:
            for i in range(0, len(subscriber_ids), 500):
                for j in range(0, len(papers), 500):
                    rows = s.execute(
                        select(SentItemRow.subscriber_id, SentItemRow.paper_id).where(
                            SentItemRow.subscriber_id.in_(subscriber_ids[i : i + 500]),
                            SentItemRow.paper_id.in_(papers[j : j + 500]),
                        )
                    )
                    for sid, pid in rows:
                        out.setdefault(sid, set()).add(pid)
        return out

    def plan_delivery(
        self,
        *,
        subscriber_id: int,
        period_key: str,
        window_start: datetime,
        window_end: datetime,
        message_id: str,
        items: Sequence[PlannedItem],
        now: datetime,
        skip_if_empty: bool = True,
    ) -> int | None:
        """Write the outbox row and its items, reserving each paper for this subscriber.

        Returns the new row id, or None when the period already has a row (another
        process planned it first). Items already reserved by an earlier delivery are
        dropped here, inside the same transaction, so no paper is ever reserved twice.
        """
        with self.write() as s:
            exists = s.scalar(
                select(DeliveryRow.id).where(
                    DeliveryRow.subscriber_id == subscriber_id,
                    DeliveryRow.period_key == period_key,
                )
            )
            if exists is not None:
                return None
            taken = set(
                s.scalars(
                    select(SentItemRow.paper_id).where(
                        SentItemRow.subscriber_id == subscriber_id,
                        SentItemRow.paper_id.in_([i.paper_id for i in items]),
                    )
                )
            )
            fresh = [i for i in items if i.paper_id not in taken]
            row = DeliveryRow(
                subscriber_id=subscriber_id,
                period_key=period_key,
                status="skipped" if skip_if_empty and not fresh else "pending",
                attempts=0,
                next_attempt_at=now,
                window_start=window_start,
                window_end=window_end,
                message_id=message_id,
                created_at=now,
                item_count=len(fresh),
            )
            try:
                with s.begin_nested():
                    s.add(row)
                    s.flush()
            except IntegrityError:
                return None
            for rank, item in enumerate(fresh):
                s.add(
                    DeliveryItemRow(
                        delivery_id=row.id,
                        rank=rank,
                        paper_id=item.paper_id,
                        score=float(item.score),
                        reason=item.reason,
                        trending=int(item.trending),
                    )
                )
                s.add(
                    SentItemRow(
                        subscriber_id=subscriber_id, paper_id=item.paper_id, delivery_id=row.id
                    )
                )
            return row.id

    # -- claiming and marking --------------------------------------------------------------------
    def claim(self, *, limit: int, holder: str, now: datetime) -> list[int]:
        """Atomically take up to ``limit`` due rows for this sender.

        SQLite: the write transaction starts with BEGIN IMMEDIATE, so no other writer runs
        between the select and the update. PostgreSQL: FOR UPDATE SKIP LOCKED, so two senders
        take disjoint rows without waiting for each other. The subscription is re-checked
        here: rows of readers who unsubscribed since planning are cancelled, not sent.
        """
        with self.write() as s:
            query = (
                select(DeliveryRow.id, SubscriberRow.status)
                .join(SubscriberRow, SubscriberRow.id == DeliveryRow.subscriber_id)
                .where(
                    DeliveryRow.status.in_(("pending", "deferred")),
                    DeliveryRow.next_attempt_at <= now,
                )
                .order_by(DeliveryRow.next_attempt_at, DeliveryRow.id)
                .limit(limit)
            )
            if self.dialect == "postgresql":
                query = query.with_for_update(skip_locked=True, of=DeliveryRow)
            rows = list(s.execute(query))
            active = [rid for rid, status in rows if status == "active"]
            gone = [rid for rid, status in rows if status != "active"]
            if active:
                s.execute(
                    update(DeliveryRow)
                    .where(DeliveryRow.id.in_(active))
                    .values(status="claimed", claimed_by=holder, claimed_at=now)
                )
            if gone:
                s.execute(
                    update(DeliveryRow)
                    .where(DeliveryRow.id.in_(gone))
                    .values(status="cancelled", last_error="unsubscribed before sending")
                )
                _release_items(s, gone)
            return active

    def mark_sending(self, delivery_id: int, *, now: datetime) -> None:
        self._set(
            delivery_id,
            ("claimed",),
            status="sending",
            claimed_at=now,
            attempts=DeliveryRow.attempts + 1,
        )

    def mark_sent(self, delivery_id: int, *, reply: str, now: datetime) -> None:
        self._set(
            delivery_id,
            ("sending",),
            status="sent",
            sent_at=now,
            server_reply=reply[:1000],
            last_error=None,
        )

    def mark_deferred(
        self, delivery_id: int, *, error: str, retry_at: datetime, now: datetime
    ) -> None:
        self._set(
            delivery_id,
            ("sending", "claimed"),
            status="deferred",
            next_attempt_at=retry_at,
            last_error=error[:2000],
            claimed_by=None,
        )

    def mark_failed(self, delivery_id: int, *, error: str, now: datetime) -> None:
        """Permanent failure: its papers are released so a later digest may carry them."""
        with self.write() as s:
            s.execute(
                update(DeliveryRow)
                .where(DeliveryRow.id == delivery_id)
                .values(status="failed", last_error=error[:2000], claimed_by=None)
            )
            _release_items(s, [delivery_id])

    def mark_ambiguous(self, delivery_id: int, *, error: str, now: datetime) -> None:
        self._set(
            delivery_id, ("sending",), status="ambiguous", last_error=error[:2000], claimed_by=None
        )

    def release(self, delivery_ids: Sequence[int]) -> None:
        """Give claimed rows back untouched (the batch was aborted before they left)."""
        if not delivery_ids:
            return
        with self.write() as s:
            s.execute(
                update(DeliveryRow)
                .where(
                    DeliveryRow.id.in_(delivery_ids), DeliveryRow.status.in_(("claimed", "sending"))
                )
                .values(status="pending", claimed_by=None, claimed_at=None)
            )

    def recover_stale(self, *, now: datetime, older_than: timedelta) -> tuple[int, list[int]]:
        """After a crash: stale ``claimed`` rows go back to pending (nothing left the process);
        stale ``sending`` rows are returned for the ambiguous-delivery policy."""
        cutoff = now - older_than
        with self.write() as s:
            result = s.execute(
                update(DeliveryRow)
                .where(DeliveryRow.status == "claimed", DeliveryRow.claimed_at < cutoff)
                .values(status="pending", claimed_by=None, claimed_at=None)
            )
            reclaimed = int(getattr(result, "rowcount", 0) or 0)
            stuck = list(
                s.scalars(
                    select(DeliveryRow.id).where(
                        DeliveryRow.status == "sending", DeliveryRow.claimed_at < cutoff
                    )
                )
            )
        return reclaimed, stuck

    def _set(self, delivery_id: int, from_states: Iterable[str], **values: object) -> None:
        with self.write() as s:
            s.execute(
                update(DeliveryRow)
                .where(DeliveryRow.id == delivery_id, DeliveryRow.status.in_(tuple(from_states)))
                .values(**values)
            )

    # -- reading -------------------------------------------------------------------------------
    def load_delivery(self, delivery_id: int) -> Delivery:
        with self.read() as s:
            row = s.get(DeliveryRow, delivery_id)
            if row is None:
                raise KeyError(delivery_id)
            sub = s.get(SubscriberRow, row.subscriber_id)
            assert sub is not None
            item_rows = list(
                s.scalars(
                    select(DeliveryItemRow)
                    .where(DeliveryItemRow.delivery_id == delivery_id)
                    .order_by(DeliveryItemRow.rank)
                )
            )
            papers = {
                p.id: paper_from_row(p)
                for p in s.scalars(
                    select(PaperRow).where(PaperRow.id.in_([i.paper_id for i in item_rows]))
                )
            }
            items = tuple(
                DeliveryItem(
                    paper=papers[i.paper_id],
                    score=i.score,
                    reason=i.reason,
                    trending=bool(i.trending),
                )
                for i in item_rows
                if i.paper_id in papers
            )
            return Delivery(
                id=row.id,
                subscriber_id=row.subscriber_id,
                email=sub.email,
                name=sub.name,
                period_key=row.period_key,
                status=row.status,
                attempts=row.attempts,
                message_id=row.message_id,
                window_start=_aware(row.window_start),
                window_end=_aware(row.window_end),
                created_at=_aware(row.created_at),
                items=items,
            )

    def outbox_counts(self) -> dict[str, int]:
        with self.read() as s:
            rows = s.execute(select(DeliveryRow.status, func.count()).group_by(DeliveryRow.status))
            return {status: int(n) for status, n in rows}

    def deliveries_for(self, email: str) -> list[tuple[str, str, int]]:
        """(period key, status, item count) of one subscriber's deliveries, newest first."""
        with self.read() as s:
            rows = s.execute(
                select(DeliveryRow.period_key, DeliveryRow.status, DeliveryRow.item_count)
                .join(SubscriberRow, SubscriberRow.id == DeliveryRow.subscriber_id)
                .where(SubscriberRow.email == email)
                .order_by(DeliveryRow.created_at.desc(), DeliveryRow.id.desc())
            )
            return [(k, st, int(n)) for k, st, n in rows]

    def sent_paper_ids(self, email: str) -> set[str]:
        with self.read() as s:
            return set(
                s.scalars(
                    select(SentItemRow.paper_id)
                    .join(SubscriberRow, SubscriberRow.id == SentItemRow.subscriber_id)
                    .where(SubscriberRow.email == email)
                )
            )


def _release_items(s: Session, delivery_ids: Sequence[int]) -> None:
    s.execute(delete(SentItemRow).where(SentItemRow.delivery_id.in_(delivery_ids)))


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)
