"""Reading the outbox back as domain values: the deliveries a sender claimed, with their
reader and papers, and the counts ``paperpost status`` shows.

The sender loads a whole claimed batch at once, in SQLAlchemy Core: four queries per
500 rows (rows with their readers, items, which papers and how fresh, the papers it
has not built yet) instead of four ORM queries per row. A paper that several readers
get is one ``Paper`` object (frozen), kept across the sender's batches while its row is
unchanged, which the renderer then finds in its cache by identity.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, func, select

from pipeline.domain import Paper, Schedule
from pipeline.store.base import StoreBase
from pipeline.store.papers import paper_from_row
from pipeline.store.rows import (
    DELIVERIES,
    DELIVERY_ITEMS,
    PAPERS,
    SUBSCRIBERS,
    DeliveryRow,
    SentItemRow,
    SubscriberRow,
)
from pipeline.store.subscribers import reader_schedule

_CHUNK = 500
# Paper id -> (its row's updated_at, the Paper built from it).
PaperCache = dict[str, tuple[datetime, Paper]]
_deliveries = DELIVERIES
_subscribers = SUBSCRIBERS
_items = DELIVERY_ITEMS
_papers = PAPERS


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
    schedule: Schedule  # the reader's schedule now (period label, footer)
    subscriber_version: int = 0  # the version of the reader's settings it was planned under


class DeliveryStore(StoreBase):
    def load_delivery(self, delivery_id: int) -> Delivery:
        """One outbox row with its reader and papers; ``KeyError`` if there is none."""
        return self.load_deliveries([delivery_id])[delivery_id]

    def load_deliveries(
        self,
        delivery_ids: Sequence[int],
        *,
        papers: PaperCache | None = None,
        items: bool = True,
    ) -> dict[int, Delivery]:
        """The rows among ``delivery_ids`` that exist, by id, each with its reader and its
        items in rank order (an item whose paper is gone is left out).

        ``items=False``: the rows and readers only (``items`` empty), one query per 500
        rows; what a sender needs when worker processes compose the messages.

        ``papers``: the papers earlier calls built, kept by the caller (a sender keeps one
        for its run). One whose row is unchanged since (same ``updated_at``) is reused, not
        read again; new and changed ones are read and added.
        """
        out: dict[int, Delivery] = {}
        papers = {} if papers is None else papers
        ids = list(dict.fromkeys(delivery_ids))
        with self.connect() as conn:  # one read transaction: a consistent view
            for i in range(0, len(ids), _CHUNK):
                out.update(_load_chunk(conn, ids[i : i + _CHUNK], papers, items=items))
        return out

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

    def delivery_with_paper(self, subscriber_id: int, paper_id: str) -> int | None:
        """The outbox row that holds ``paper_id`` for this reader (sent, or on its way)."""
        with self.read() as s:
            found: int | None = s.scalar(
                select(SentItemRow.delivery_id).where(
                    SentItemRow.subscriber_id == subscriber_id, SentItemRow.paper_id == paper_id
                )
            )
            return found

    def delivery_covering(self, subscriber_id: int, moment: datetime) -> int | None:
        """The reader's newest outbox row whose window holds ``moment`` (a paper first seen
        then was considered for that digest)."""
        with self.read() as s:
            found: int | None = s.scalar(
                select(DeliveryRow.id)
                .where(
                    DeliveryRow.subscriber_id == subscriber_id,
                    DeliveryRow.window_start < moment,
                    DeliveryRow.window_end >= moment,
                    DeliveryRow.status.not_in(("failed", "cancelled")),
                )
                .order_by(DeliveryRow.window_end.desc())
                .limit(1)
            )
            return found

    def sent_paper_ids(self, email: str) -> set[str]:
        with self.read() as s:
            return set(
                s.scalars(
                    select(SentItemRow.paper_id)
                    .join(SubscriberRow, SubscriberRow.id == SentItemRow.subscriber_id)
                    .where(SubscriberRow.email == email)
                )
            )


def _load_chunk(
    conn: Connection, ids: list[int], papers: PaperCache, *, items: bool
) -> dict[int, Delivery]:
    """Deliveries for ``ids``; ``papers`` is the paper cache, brought up to date as needed."""
    d, s = _deliveries.c, _subscribers.c
    heads = conn.execute(
        select(
            d.id,
            d.subscriber_id,
            s.email,
            s.name,
            d.period_key,
            d.status,
            d.attempts,
            d.message_id,
            d.window_start,
            d.window_end,
            d.created_at,
            d.subscriber_version,
            s.frequency,
            s.send_at,
            s.timezone,
        )
        .join_from(_deliveries, _subscribers, s.id == d.subscriber_id)
        .where(d.id.in_(ids))
    ).all()
    by_delivery = _load_items(conn, ids, papers) if items else {}
    return {
        head.id: Delivery(
            id=head.id,
            subscriber_id=head.subscriber_id,
            email=head.email,
            name=head.name,
            period_key=head.period_key,
            status=head.status,
            attempts=head.attempts,
            message_id=head.message_id,
            window_start=head.window_start,
            window_end=head.window_end,
            created_at=head.created_at,
            items=tuple(by_delivery.get(head.id, ())),
            schedule=reader_schedule(head.frequency, head.send_at, head.timezone),
            subscriber_version=head.subscriber_version,
        )
        for head in heads
    }


def _load_items(
    conn: Connection, ids: list[int], papers: PaperCache
) -> dict[int, list[DeliveryItem]]:
    """The items of the rows ``ids`` in rank order, with their papers from ``papers``."""
    it = _items.c
    items = conn.execute(
        select(it.delivery_id, it.paper_id, it.score, it.reason, it.trending)
        .where(it.delivery_id.in_(ids))
        .order_by(it.delivery_id, it.rank)
    ).all()
    # The papers these rows carry and when each last changed; only those not in the cache,
    # or changed since, are read in full and built.
    p = _papers.c
    carried = select(it.paper_id).where(it.delivery_id.in_(ids))
    versions = conn.execute(select(p.id, p.updated_at).where(p.id.in_(carried))).all()
    stale = [r.id for r in versions if r.id not in papers or papers[r.id][0] != r.updated_at]
    for j in range(0, len(stale), _CHUNK):
        for row in conn.execute(select(_papers).where(p.id.in_(stale[j : j + _CHUNK]))):
            papers[row.id] = (row.updated_at, paper_from_row(row))
    present = {row.id for row in versions}
    by_delivery: dict[int, list[DeliveryItem]] = {}
    for row in items:
        if row.paper_id in present:
            by_delivery.setdefault(row.delivery_id, []).append(
                DeliveryItem(
                    paper=papers[row.paper_id][1],
                    score=row.score,
                    reason=row.reason,
                    trending=bool(row.trending),
                )
            )
    return by_delivery
