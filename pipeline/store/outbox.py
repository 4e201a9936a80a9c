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

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import cast

from sqlalchemy import Connection, Table, Update, bindparam, delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from pipeline.store.base import StoreBase
from pipeline.store.rows import (
    DeliveryItemRow,
    DeliveryRow,
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


_deliveries = cast("Table", DeliveryRow.__table__)
_subscribers = cast("Table", SubscriberRow.__table__)
_sent_items = cast("Table", SentItemRow.__table__)


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
    # Plain connections and Core statements: a sender makes two of these writes per message
    # (``sending`` before the hand-off, the outcome after), and an ORM session for each
    # cost five times the statement.
    def claim(self, *, limit: int, holder: str, now: datetime) -> list[int]:
        """Atomically take up to ``limit`` due rows for this sender.

        SQLite: the write transaction starts with BEGIN IMMEDIATE, so no other writer runs
        between the select and the update. PostgreSQL: FOR UPDATE SKIP LOCKED, so two senders
        take disjoint rows without waiting for each other. The subscription is re-checked
        here: rows of readers who unsubscribed since planning are cancelled, not sent.
        """
        d, subscriber = _deliveries.c, _subscribers.c
        with self.begin() as conn:
            query = (
                select(d.id, subscriber.status)
                .join_from(_deliveries, _subscribers, subscriber.id == d.subscriber_id)
                .where(d.status.in_(("pending", "deferred")), d.next_attempt_at <= now)
                .order_by(d.next_attempt_at, d.id)
                .limit(limit)
            )
            if self.dialect == "postgresql":
                query = query.with_for_update(skip_locked=True, of=_deliveries)
            rows = list(conn.execute(query))
            active = [rid for rid, status in rows if status == "active"]
            gone = [rid for rid, status in rows if status != "active"]
            if active:
                conn.execute(
                    update(_deliveries)
                    .where(d.id.in_(active))
                    .values(status="claimed", claimed_by=holder, claimed_at=now)
                )
            if gone:
                conn.execute(
                    update(_deliveries)
                    .where(d.id.in_(gone))
                    .values(status="cancelled", last_error="unsubscribed before sending")
                )
                _release_items(conn, gone)
            return active

    def mark_sending(self, delivery_id: int, *, holder: str, now: datetime) -> bool:
        """``claimed`` by ``holder`` -> ``sending``, committed: call just before the hand-off.

        False when the row is no longer this sender's claim (a stale claim that another
        sender's recovery returned to the queue and someone claimed again): then the
        caller must not send it.
        """
        return self._move(_TO_SENDING, delivery_id=delivery_id, holder=holder, now=now)

    def mark_sent(self, delivery_id: int, *, reply: str, now: datetime) -> bool:
        """``sending`` -> ``sent``, committed: call right after the server's reply."""
        return self._move(_TO_SENT, delivery_id=delivery_id, now=now, reply=reply[:1000])

    def mark_deferred(
        self, delivery_id: int, *, error: str, retry_at: datetime, now: datetime
    ) -> bool:
        return self._move(
            _TO_DEFERRED, delivery_id=delivery_id, retry_at=retry_at, error=error[:2000]
        )

    def mark_failed(self, delivery_id: int, *, error: str, now: datetime) -> None:
        """Permanent failure: its papers are released so a later digest may carry them."""
        with self.begin() as conn:
            conn.execute(
                update(_deliveries)
                .where(_deliveries.c.id == delivery_id)
                .values(status="failed", last_error=error[:2000], claimed_by=None)
            )
            _release_items(conn, [delivery_id])

    def mark_ambiguous(self, delivery_id: int, *, error: str, now: datetime) -> bool:
        return self._move(_TO_AMBIGUOUS, delivery_id=delivery_id, error=error[:2000])

    def release(self, delivery_ids: Sequence[int]) -> None:
        """Give claimed rows back untouched (the batch was aborted before they left)."""
        if not delivery_ids:
            return
        with self.begin() as conn:
            conn.execute(
                update(_deliveries)
                .where(
                    _deliveries.c.id.in_(delivery_ids),
                    _deliveries.c.status.in_(("claimed", "sending")),
                )
                .values(status="pending", claimed_by=None, claimed_at=None)
            )

    def recover_stale(self, *, now: datetime, older_than: timedelta) -> tuple[int, list[int]]:
        """After a crash: stale ``claimed`` rows go back to pending (nothing left the process);
        stale ``sending`` rows are returned for the ambiguous-delivery policy."""
        cutoff = now - older_than
        with self.begin() as conn:
            result = conn.execute(
                update(_deliveries)
                .where(_deliveries.c.status == "claimed", _deliveries.c.claimed_at < cutoff)
                .values(status="pending", claimed_by=None, claimed_at=None)
            )
            reclaimed = int(getattr(result, "rowcount", 0) or 0)
            stuck = list(
                conn.scalars(
                    select(_deliveries.c.id).where(
                        _deliveries.c.status == "sending", _deliveries.c.claimed_at < cutoff
                    )
                )
            )
        return reclaimed, stuck

    def _move(self, transition: Update, **params: object) -> bool:
        """Run one of the transitions below; False if the row was not in a state it leaves
        from (nothing is written then)."""
        with self.begin() as conn:
            return bool(conn.execute(transition, params).rowcount)


def _transition(from_states: tuple[str, ...], **values: object) -> Update:
    """``UPDATE deliveries SET values WHERE id = :delivery_id AND status IN from_states``.

    Built once, at import: a statement object that is reused keeps its cache key, so running
    it costs little more than the database's own work (building it per call cost as much).
    """
    d = _deliveries.c
    # One state: "=", which needs no expanding of an IN list at each run.
    guard = d.status == from_states[0] if len(from_states) == 1 else d.status.in_(from_states)
    return update(_deliveries).where(d.id == bindparam("delivery_id"), guard).values(**values)


_TO_SENDING = (
    _transition(
        ("claimed",),
        status="sending",
        claimed_at=bindparam("now"),
        attempts=_deliveries.c.attempts + 1,
    )
    # Only the sender whose claim it is may start the exchange.
    .where(_deliveries.c.claimed_by == bindparam("holder"))
)
_TO_SENT = _transition(
    ("sending",),
    status="sent",
    sent_at=bindparam("now"),
    server_reply=bindparam("reply"),
    last_error=None,
)
_TO_DEFERRED = _transition(
    ("sending", "claimed"),
    status="deferred",
    next_attempt_at=bindparam("retry_at"),
    last_error=bindparam("error"),
    claimed_by=None,
)
_TO_AMBIGUOUS = _transition(
    ("sending",), status="ambiguous", last_error=bindparam("error"), claimed_by=None
)


def _release_items(db: Session | Connection, delivery_ids: Sequence[int]) -> None:
    db.execute(delete(_sent_items).where(_sent_items.c.delivery_id.in_(delivery_ids)))


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)
