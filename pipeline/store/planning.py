"""Planning's writes to the outbox: which periods have a row, where each reader's next
window starts, which papers a reader already has, and the bulk write of a block of
readers' rows, items and reserved papers in one transaction.

The guarantees live in the database's unique keys: one row per (reader, period), one
reservation per (reader, paper). Concurrent planners insert with ``ON CONFLICT DO
NOTHING`` in key order (no deadlock) and keep only what they actually reserved.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    DateTime,
    Insert,
    Integer,
    MetaData,
    String,
    Table,
    bindparam,
    func,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import dialect as sqlite_dialect
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from pipeline.domain import MatchItem
from pipeline.errors import StoreError
from pipeline.store.base import StoreBase
from pipeline.store.rows import (
    DELIVERIES,
    DELIVERY_ITEMS,
    SENT_ITEMS,
    SUBSCRIBERS,
    DeliveryRow,
    SentItemRow,
)

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
class PlannedDelivery:
    """One new outbox row for ``Outbox.plan_deliveries``: a reader's digest for one period,
    with its items in rank order."""

    subscriber_id: int
    period_key: str
    window_start: datetime
    window_end: datetime
    message_id: str
    # A match's own items will do (same fields): planning passes them without copying.
    items: Sequence[PlannedItem | MatchItem]
    skip_if_empty: bool = True  # no item left: written ``skipped`` instead of ``pending``
    subscriber_version: int = 0  # the version of the reader's settings it was planned under


_deliveries = DELIVERIES
_subscribers = SUBSCRIBERS
_sent_items = SENT_ITEMS
_items = DELIVERY_ITEMS


class PlanningStore(StoreBase):
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
        """End of each subscriber's last covered window (absent: never had a digest).

        Selected by subscriber alone, grouped by status, and the covered statuses kept
        here: with the status in the WHERE clause SQLite's planner (without statistics)
        reads the status index, every covered row of the outbox per query."""
        out: dict[int, datetime] = {}
        with self.read() as s:
            for i in range(0, len(subscriber_ids), 500):
                rows = s.execute(
                    select(
                        DeliveryRow.subscriber_id,
                        DeliveryRow.status,
                        func.max(DeliveryRow.window_end),
                    )
                    .where(DeliveryRow.subscriber_id.in_(subscriber_ids[i : i + 500]))
                    .group_by(DeliveryRow.subscriber_id, DeliveryRow.status)
                )
                for sid, status, end in rows:
                    if status in COVERED and (sid not in out or _aware(end) > out[sid]):
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
        subscriber_version: int = 0,
    ) -> int | None:
        """One row of :meth:`plan_deliveries`: the new row's id, or None when the period
        already has a row."""
        plan = PlannedDelivery(
            subscriber_id=subscriber_id,
            period_key=period_key,
            window_start=window_start,
            window_end=window_end,
            message_id=message_id,
            items=items,
            skip_if_empty=skip_if_empty,
            subscriber_version=subscriber_version,
        )
        return self.plan_deliveries([plan], now=now)[0]

    def plan_deliveries(
        self, plans: Sequence[PlannedDelivery], *, now: datetime
    ) -> list[int | None]:
        """Write a block of new rows and their items in ONE transaction; see
        ``Outbox.plan_deliveries``. Returns each row's new id, None where its
        (subscriber, period) already had a row.

        Set-based, a few statements per block whatever its size:

        1. ``INSERT INTO deliveries ... ON CONFLICT DO NOTHING RETURNING``: the rows whose
           period has none yet, with the item counts expected from the block alone.
        2. ``INSERT INTO sent_items ... ON CONFLICT DO NOTHING`` for the items of the rows
           just written: the unique key (subscriber, paper) settles which row holds a paper,
           against earlier rows and against a planner writing at the same moment alike.
        3. One count per new row of what it holds (``GROUP BY``). Where a count falls short
           of what was offered (a paper already reserved), the row's held papers are read
           back, its other items dropped, and its ``item_count`` (and ``skipped`` status)
           corrected: the row keeps exactly the items it reserved.
        4. ``INSERT INTO delivery_items`` for the kept items, ranked 0, 1, ... in the
           given order.

        Rows are inserted sorted by (subscriber, period) and reservations by (subscriber,
        paper), so two planners writing overlapping blocks at once take the same locks in
        the same order on PostgreSQL (one waits for the other, neither deadlocks); on
        SQLite the transaction holds the write lock throughout (BEGIN IMMEDIATE).

        A row whose items name one paper twice, or a reader not in the database, is a
        ``StoreError`` and nothing of the block is written.
        """
        written: list[int | None] = [None] * len(plans)
        if not plans:
            return written
        _check_items(plans)
        firsts = _first_per_period(plans)
        offered = _items_left(plans, firsts)  # provisional: if every first row is written
        counted = {n: len(items) for n, items in offered.items()}  # the counts first written
        # Built before the transaction, which on SQLite holds the database's write lock.
        order = sorted(firsts, key=lambda n: (plans[n].subscriber_id, plans[n].period_key))
        rows = [
            (
                plans[n].subscriber_id,
                plans[n].period_key,
                "skipped" if plans[n].skip_if_empty and not counted[n] else "pending",
                0,
                now,
                plans[n].window_start,
                plans[n].window_end,
                plans[n].message_id,
                now,
                counted[n],
                plans[n].subscriber_version,
            )
            for n in order
        ]
        claims = _claims(plans, offered)
        with self.begin() as conn:
            # 1. the rows, in (subscriber, period) order
            ids = _insert_rows(conn, rows)
            new: dict[int, int] = {}  # index in plans -> new row id
            for n in firsts:
                row_id = ids.get((plans[n].subscriber_id, plans[n].period_key))
                if row_id is not None:
                    new[n] = written[n] = row_id
            if not new:
                return written
            kept = dict(offered)
            if len(new) < len(firsts):
                # A row of the block lost its period to another planner: the block's later
                # rows of that reader may carry the papers it would have reserved.
                kept = dict(_items_left(plans, sorted(new)))
                claims = _claims(plans, kept)

            # 2. the reservations, in (subscriber, paper) order
            if claims:
                _reserve(conn, [(sid, pid, new[n]) for sid, pid, n in claims])

            # 3. what each row holds
            held_counts = _held_counts(conn, list(new.values()))
            short = {
                row_id: n for n, row_id in new.items() if held_counts.get(row_id, 0) != len(kept[n])
            }
            if short:
                held = _held_papers(conn, list(short))
                for row_id, n in short.items():
                    mine = held.get(row_id, set())
                    kept[n] = [item for item in kept[n] if item.paper_id in mine]
            fixes = [
                {
                    "fix_id": row_id,
                    "fix_count": len(kept[n]),
                    "fix_status": "skipped"
                    if plans[n].skip_if_empty and not kept[n]
                    else "pending",
                }
                for n, row_id in new.items()
                if len(kept[n]) != counted[n]
            ]
            if fixes:
                conn.execute(_FIX_COUNT, fixes)

            # 4. the frozen items
            items = [
                (row_id, rank, item.paper_id, float(item.score), item.reason, int(item.trending))
                for n, row_id in new.items()
                for rank, item in enumerate(kept[n])
            ]
            if items:
                _freeze(conn, items)
        return written


# -- planning in bulk (OutboxStore.plan_deliveries) ----------------------------------------------
_FIX_COUNT = (
    update(_deliveries)
    .where(_deliveries.c.id == bindparam("fix_id"))
    .values(item_count=bindparam("fix_count"), status=bindparam("fix_status"))
)
_CHUNK = 2000  # ids per IN list (SQLite allows 32,766 parameters, PostgreSQL 65,535)


def _check_items(plans: Sequence[PlannedDelivery]) -> None:
    for plan in plans:
        if len({item.paper_id for item in plan.items}) != len(plan.items):
            raise StoreError(
                f"a paper appears twice among the items of subscriber {plan.subscriber_id}, "
                f"period {plan.period_key}"
            )


def _first_per_period(plans: Sequence[PlannedDelivery]) -> list[int]:
    """Indexes of the rows to write, ascending: the first of each (subscriber, period) in
    the block (a later one is planned after it, so finds the period taken)."""
    seen: set[tuple[int, str]] = set()
    firsts = []
    for n, plan in enumerate(plans):
        key = (plan.subscriber_id, plan.period_key)
        if key not in seen:
            seen.add(key)
            firsts.append(n)
    return firsts


def _items_left(
    plans: Sequence[PlannedDelivery], rows: Sequence[int]
) -> dict[int, Sequence[PlannedItem | MatchItem]]:
    """The items of each of ``rows`` (ascending indexes) without the papers an earlier one
    of them gives the same reader: what each would reserve if planned one after another."""
    readers = Counter(plans[n].subscriber_id for n in rows)
    given: dict[int, set[str]] = {}
    out: dict[int, Sequence[PlannedItem | MatchItem]] = {}
    for n in rows:
        plan = plans[n]
        if readers[plan.subscriber_id] == 1:
            out[n] = plan.items
            continue
        taken = given.setdefault(plan.subscriber_id, set())
        out[n] = [item for item in plan.items if item.paper_id not in taken]
        taken.update(item.paper_id for item in plan.items)
    return out


# The two large writes of a block (~20 rows per reader each) go below SQLAlchemy's per-row
# parameter handling, which cost as much as the database's own work: on SQLite the Core
# statement compiled once and run by the driver's executemany over tuples; on PostgreSQL
# COPY (a fifteenth of executemany's CPU, less than half its wall time: bench/PLAN.md).
# The rows themselves (one per reader) go through Core on SQLite; on PostgreSQL through
# COPY as well, as a multi-row INSERT ... RETURNING there spent most of its time in the
# driver parsing its thousands of bind parameters.
_ROW_COLUMNS = (
    "subscriber_id",
    "period_key",
    "status",
    "attempts",
    "next_attempt_at",
    "window_start",
    "window_end",
    "message_id",
    "created_at",
    "item_count",
    "subscriber_version",
)
_MOMENTS = ("next_attempt_at", "window_start", "window_end", "created_at")  # aware UTC
_RESERVE_COLUMNS = ("subscriber_id", "paper_id", "delivery_id")
_ITEM_COLUMNS = ("delivery_id", "rank", "paper_id", "score", "reason", "trending")


def _positional(statement: Insert, columns: Sequence[str]) -> str:
    """SQLite's text of ``statement`` with its ``?`` parameters in the order of ``columns``."""
    compiled = statement.compile(dialect=sqlite_dialect(), column_keys=list(columns))
    assert tuple(compiled.positiontup or ()) == tuple(columns), compiled.positiontup
    return compiled.string


_SQLITE_RESERVE = _positional(
    sqlite_insert(_sent_items).on_conflict_do_nothing(
        index_elements=[_sent_items.c.subscriber_id, _sent_items.c.paper_id]
    ),
    _RESERVE_COLUMNS,
)
_SQLITE_FREEZE = _positional(_items.insert(), _ITEM_COLUMNS)
# PostgreSQL: reservations are copied here first, then inserted with ON CONFLICT DO NOTHING
# (COPY itself has no ON CONFLICT). Private to the transaction, dropped at its end.
_staged_rows = Table(
    "paperpost_staged_deliveries",
    MetaData(),
    Column("subscriber_id", Integer),
    Column("period_key", String(32)),
    Column("status", String(16)),
    Column("attempts", Integer),
    Column("next_attempt_at", DateTime(timezone=True)),
    Column("window_start", DateTime(timezone=True)),
    Column("window_end", DateTime(timezone=True)),
    Column("message_id", String(255)),
    Column("created_at", DateTime(timezone=True)),
    Column("item_count", Integer),
    Column("subscriber_version", Integer),
    prefixes=["TEMPORARY"],
    postgresql_on_commit="DROP",
)
_staged_reservations = Table(
    "paperpost_staged_reservations",
    MetaData(),
    Column("subscriber_id", Integer),
    Column("paper_id", String(300)),
    Column("delivery_id", BigInteger),
    prefixes=["TEMPORARY"],
    postgresql_on_commit="DROP",
)


def _insert_rows(conn: Connection, rows: list[tuple[Any, ...]]) -> dict[tuple[int, str], int]:
    """``INSERT INTO deliveries ... ON CONFLICT DO NOTHING RETURNING`` of ``rows`` (values
    in ``_ROW_COLUMNS`` order, sorted by subscriber and period): {(subscriber, period): new
    id} of those written."""
    d = _deliveries.c
    if conn.dialect.name != "postgresql":
        statement = (
            sqlite_insert(_deliveries)
            .on_conflict_do_nothing(index_elements=[d.subscriber_id, d.period_key])
            .returning(d.id, d.subscriber_id, d.period_key)
        )
        written = conn.execute(
            statement, [dict(zip(_ROW_COLUMNS, row, strict=True)) for row in rows]
        )
        return {(r.subscriber_id, r.period_key): r.id for r in written}
    staged = _staged_rows
    staged.create(conn)
    moments = [i for i, name in enumerate(_ROW_COLUMNS) if name in _MOMENTS]
    _copy(conn, staged, _ROW_COLUMNS, [_utc_columns(row, moments) for row in rows])
    statement = (
        postgresql_insert(_deliveries)
        .from_select(
            list(_ROW_COLUMNS),
            select(*(staged.c[name] for name in _ROW_COLUMNS)).order_by(
                staged.c.subscriber_id, staged.c.period_key
            ),
        )
        .on_conflict_do_nothing(index_elements=[d.subscriber_id, d.period_key])
        .returning(d.id, d.subscriber_id, d.period_key)
    )
    return {(r.subscriber_id, r.period_key): r.id for r in conn.execute(statement)}


def _utc_columns(row: tuple[Any, ...], moments: Sequence[int]) -> tuple[Any, ...]:
    """``row`` with its datetimes in UTC, as the ``UtcDateTime`` column type would bind them
    (COPY goes around column types): a naive one is refused."""
    values = list(row)
    for i in moments:
        if values[i].tzinfo is None:
            raise StoreError("naive datetime reached the outbox; use aware UTC datetimes")
        values[i] = values[i].astimezone(UTC)
    return tuple(values)


def _reserve(conn: Connection, rows: list[tuple[int, str, int]]) -> None:
    """``INSERT INTO sent_items ... ON CONFLICT DO NOTHING`` of (subscriber, paper, row)
    tuples, sorted by (subscriber, paper)."""
    if conn.dialect.name != "postgresql":
        conn.exec_driver_sql(_SQLITE_RESERVE, rows)
        return
    staged, si = _staged_reservations, _sent_items.c
    staged.create(conn)
    _copy(conn, staged, _RESERVE_COLUMNS, rows)
    conn.execute(
        postgresql_insert(_sent_items)
        .from_select(
            list(_RESERVE_COLUMNS),
            select(*(staged.c[name] for name in _RESERVE_COLUMNS)).order_by(
                staged.c.subscriber_id, staged.c.paper_id
            ),
        )
        .on_conflict_do_nothing(index_elements=[si.subscriber_id, si.paper_id])
    )


def _freeze(conn: Connection, rows: list[tuple[int, int, str, float, str, int]]) -> None:
    """``INSERT INTO delivery_items`` (no conflict is possible: the rows are new)."""
    if conn.dialect.name == "postgresql":
        _copy(conn, _items, _ITEM_COLUMNS, rows)
    else:
        conn.exec_driver_sql(_SQLITE_FREEZE, rows)


def _copy(
    conn: Connection, table: Table, columns: Sequence[str], rows: Sequence[tuple[object, ...]]
) -> None:
    """PostgreSQL's COPY ... FROM STDIN of ``rows`` into ``table``, in this transaction."""
    quote = conn.dialect.identifier_preparer
    names = ", ".join(quote.quote(name) for name in columns)
    statement = f"COPY {quote.format_table(table)} ({names}) FROM STDIN"
    driver = conn.connection.driver_connection  # psycopg's own connection
    assert driver is not None
    cursor = driver.cursor()
    try:
        with cursor.copy(statement) as copy:
            for row in rows:
                copy.write_row(row)
    except conn.dialect.loaded_dbapi.Error as exc:
        raise StoreError(f"database write failed: {exc}") from exc
    finally:
        cursor.close()


def _claims(
    plans: Sequence[PlannedDelivery], items: dict[int, Sequence[PlannedItem | MatchItem]]
) -> list[tuple[int, str, int]]:
    """(subscriber, paper, index in plans) of every item of ``items``, in (subscriber,
    paper) order: the order every planner takes the reservations' locks in. No pair comes
    twice (``_items_left`` gave a reader's paper to one row)."""
    return sorted(
        (plans[n].subscriber_id, item.paper_id, n) for n, row in items.items() for item in row
    )


def _held_counts(conn: Connection, delivery_ids: Sequence[int]) -> dict[int, int]:
    si = _sent_items.c
    counts: dict[int, int] = {}
    for i in range(0, len(delivery_ids), _CHUNK):
        query = (
            select(si.delivery_id, func.count())
            .where(si.delivery_id.in_(delivery_ids[i : i + _CHUNK]))
            .group_by(si.delivery_id)
        )
        counts.update((row_id, count) for row_id, count in conn.execute(query))
    return counts


def _held_papers(conn: Connection, delivery_ids: Sequence[int]) -> dict[int, set[str]]:
    si = _sent_items.c
    held: dict[int, set[str]] = {}
    for i in range(0, len(delivery_ids), _CHUNK):
        query = select(si.delivery_id, si.paper_id).where(
            si.delivery_id.in_(delivery_ids[i : i + _CHUNK])
        )
        for row_id, paper_id in conn.execute(query):
            held.setdefault(row_id, set()).add(paper_id)
    return held


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)
