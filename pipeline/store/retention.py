"""Retention: the history older than ``[database] retention_days`` is deleted, in bounded
batches, so the database stops growing for ever (``paperpost prune``, daily in the daemon;
docs/operating.md, "Retention").

For ``cutoff = now - retention_days`` a prune deletes:

1. ``deliveries`` rows in a terminal state (:data:`TERMINAL`: ``sent``, ``skipped``,
   ``failed``, ``cancelled``) created before the cutoff and, when sent, sent before it
   (a digest's links are signed when it is sent and name its row), with their
   ``delivery_items`` and ``sent_items``. Never a ``pending``, ``claimed``, ``sending``,
   ``deferred`` or ``ambiguous`` row, whatever its age. Never, per reader, the row
   planning reads (the newest ``COVERED`` window end, :meth:`PlanningStore.
   last_window_ends`), the reader's newest row (the last period planned) nor a row whose
   (reader, period key) the caller names in ``keep`` (the period each reader's schedule
   has due now): so no period is ever planned twice and no window starts over.
2. ``runs`` finished before the cutoff (an unfinished run is never deleted).
3. ``bounce_events`` received before the cutoff.

Papers, feedback, subscribers and suppressions are never deleted: papers keep their
``first_seen`` so an old paper never comes back as new; feedback is the readers' learning
signal; suppressions are the promise never to mail an address again.

Why the reservations may go with their rows: a window never reaches further back than
``[schedule] max_window_days`` (at most 365), and a retention below 367 days is refused at
load, so a paper reserved by a pruned row was first seen before any window still to be
planned can start: it can never be offered to that reader again.

Each batch (``batch_size`` rows, default 5,000) is one short write transaction: the
candidates are found by a read, then re-checked, protected and deleted under the write
lock, children first (SQLite enforces the ``ON DELETE CASCADE`` keys here too, ``PRAGMA
foreign_keys=ON`` in :mod:`pipeline.store.engine`; deleting them explicitly gives exact
counts either way). A first prune of a large database therefore never holds the write lock
for long. ``dry_run`` counts what would go and deletes nothing.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import cast

from sqlalchemy import Connection, Table, delete, func, or_, select
from sqlalchemy.sql.elements import ColumnElement

from pipeline.store.base import StoreBase
from pipeline.store.planning import COVERED
from pipeline.store.rows import BOUNCE_EVENTS, DELIVERIES, DELIVERY_ITEMS, SENT_ITEMS, RunRow

# The outbox states a row never leaves on its own (``failed`` leaves only by an operator's
# ``requeue``): see pipeline/store/port.py. ``ambiguous`` is not among them: it waits for
# the operator's word, however old.
TERMINAL = ("sent", "skipped", "failed", "cancelled")
BATCH_SIZE = 5_000
_CHUNK = 500  # readers or ids per IN list of the protection's reads

_deliveries = DELIVERIES
_items = DELIVERY_ITEMS
_sent_items = SENT_ITEMS
_runs = cast("Table", RunRow.__table__)
_bounces = BOUNCE_EVENTS


@dataclass(frozen=True)
class PruneCounts:
    """Rows deleted (or, in a dry run, that would be) per table."""

    deliveries: int = 0
    delivery_items: int = 0
    sent_items: int = 0
    runs: int = 0
    bounce_events: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "deliveries": self.deliveries,
            "delivery_items": self.delivery_items,
            "sent_items": self.sent_items,
            "runs": self.runs,
            "bounce_events": self.bounce_events,
        }

    @property
    def total(self) -> int:
        return sum(self.as_dict().values())


class RetentionStore(StoreBase):
    def prune(
        self,
        *,
        cutoff: datetime,
        keep: Collection[tuple[int, str]] = (),
        batch_size: int = BATCH_SIZE,
        dry_run: bool = False,
    ) -> PruneCounts:
        """Delete the history older than ``cutoff`` (the module's rules), ``batch_size``
        rows per transaction; the counts per table. ``keep``: (reader id, period key)
        pairs whose rows stay whatever their age."""
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        deliveries, items, reserved = self._prune_deliveries(cutoff, set(keep), batch_size, dry_run)
        runs = self._prune_simple(
            _runs,
            (_runs.c.finished_at.is_not(None), _runs.c.finished_at < cutoff),
            batch_size,
            dry_run,
        )
        bounces = self._prune_simple(
            _bounces, (_bounces.c.received_at < cutoff,), batch_size, dry_run
        )
        return PruneCounts(
            deliveries=deliveries,
            delivery_items=items,
            sent_items=reserved,
            runs=runs,
            bounce_events=bounces,
        )

    def _prune_deliveries(
        self, cutoff: datetime, keep: set[tuple[int, str]], batch_size: int, dry_run: bool
    ) -> tuple[int, int, int]:
        d = _deliveries.c
        old = (
            d.status.in_(TERMINAL),
            d.created_at < cutoff,
            or_(d.sent_at.is_(None), d.sent_at < cutoff),
        )
        rows = items = reserved = 0
        last = 0
        while True:
            # The scan and the protection are reads; the write lock is taken for the
            # batch's deletes only.
            # The rows are walked in id order and their state is checked here, not in the
            # WHERE clause: with it there, SQLite reads the status index and sorts every
            # terminal row of the outbox again for each batch (3x slower on 200k rows).
            with self.connect() as conn:
                batch = conn.execute(
                    select(d.id, d.subscriber_id, d.period_key, d.status)
                    .where(d.id > last, *old[1:])
                    .order_by(d.id)
                    .limit(batch_size)
                ).all()
                if not batch:
                    break
                last = batch[-1].id
                batch_old = [row for row in batch if row.status in TERMINAL]
                protected = _protected(conn, sorted({row.subscriber_id for row in batch_old}))
            doomed = [
                row.id
                for row in batch_old
                if row.id not in protected and (row.subscriber_id, row.period_key) not in keep
            ]
            if doomed:
                with self.connect() if dry_run else self.begin() as conn:
                    # Re-checked under the write lock (locked on PostgreSQL): a row an
                    # operator requeued since the scan is pending now, and stays.
                    query = select(d.id).where(d.id.in_(doomed), *old)
                    if self.dialect == "postgresql" and not dry_run:
                        query = query.with_for_update()
                    doomed = list(conn.scalars(query))
                    if doomed:
                        items += _count_or_delete(
                            conn, _items, _items.c.delivery_id, doomed, dry_run
                        )
                        reserved += _count_or_delete(
                            conn, _sent_items, _sent_items.c.delivery_id, doomed, dry_run
                        )
                        rows += _count_or_delete(conn, _deliveries, d.id, doomed, dry_run)
            if len(batch) < batch_size:
                break
        return rows, items, reserved

    def _prune_simple(
        self,
        table: Table,
        where: Sequence[ColumnElement[bool]],
        batch_size: int,
        dry_run: bool,
    ) -> int:
        """Rows of ``table`` matching ``where``, by id, ``batch_size`` per transaction."""
        key = table.c.id
        total = 0
        last = 0
        while True:
            with self.connect() as conn:
                batch = list(
                    conn.scalars(
                        select(key).where(key > last, *where).order_by(key).limit(batch_size)
                    )
                )
            if not batch:
                return total
            last = batch[-1]
            if dry_run:
                total += len(batch)
            else:
                with self.begin() as conn:
                    result = conn.execute(delete(table).where(key.in_(batch), *where))
                    total += int(result.rowcount or 0)
            if len(batch) < batch_size:
                return total


def _protected(conn: Connection, subscriber_ids: Sequence[int]) -> set[int]:
    """Ids of the rows that stay whatever their age, of these readers: each one's newest
    row (the last period planned: ``periods_present`` finds it) and newest covered row
    (the window end :meth:`PlanningStore.last_window_ends` reads; planning makes window
    ends grow with the rows, so it is the newest covered one).

    The first query reads only the (subscriber, period) index on SQLite (the id is its
    rowid); the second only the few readers whose newest row is not covered (a failed or
    cancelled last digest), grouped by status as ``last_window_ends`` does."""
    d = _deliveries.c
    newest: dict[int, int] = {}
    for i in range(0, len(subscriber_ids), _CHUNK):
        rows = conn.execute(
            select(d.subscriber_id, func.max(d.id))
            .where(d.subscriber_id.in_(subscriber_ids[i : i + _CHUNK]))
            .group_by(d.subscriber_id)
        )
        newest.update((sid, top) for sid, top in rows)
    ids = sorted(newest.values())
    uncovered: list[int] = []
    for i in range(0, len(ids), _CHUNK):
        rows = conn.execute(select(d.subscriber_id, d.status).where(d.id.in_(ids[i : i + _CHUNK])))
        uncovered.extend(sid for sid, status in rows if status not in COVERED)
    keep = set(ids)
    for i in range(0, len(uncovered), _CHUNK):
        groups = conn.execute(
            select(d.subscriber_id, d.status, func.max(d.id))
            .where(d.subscriber_id.in_(uncovered[i : i + _CHUNK]))
            .group_by(d.subscriber_id, d.status)
        )
        top: dict[int, int] = {}
        for sid, status, row_id in groups:
            if status in COVERED and row_id > top.get(sid, 0):
                top[sid] = row_id
        keep.update(top.values())
    return keep


def _count_or_delete(
    conn: Connection, table: Table, column: ColumnElement[int], ids: Sequence[int], dry_run: bool
) -> int:
    if dry_run:
        return int(conn.scalar(select(func.count()).select_from(table).where(column.in_(ids))) or 0)
    return int(conn.execute(delete(table).where(column.in_(ids))).rowcount or 0)
