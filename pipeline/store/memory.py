"""``MemoryOutbox``: the outbox port in plain Python, for unit tests.

Dicts behind one lock, no database. It keeps the whole contract of ``pipeline.store.port``
(``tests/test_outbox_contract.py`` runs the same suite over it and over the SQL store), so
code written against ``Outbox`` can be tested without SQLite or PostgreSQL. Nothing
persists and nothing is shared between processes: never use it for real deliveries.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pipeline.domain import MatchItem
from pipeline.errors import StoreError
from pipeline.store.planning import COVERED, PlannedDelivery, PlannedItem
from pipeline.store.port import REQUEUEABLE, OutboxEntry


@dataclass
class _Row:
    id: int
    subscriber_id: int
    period_key: str
    status: str
    next_attempt_at: datetime
    window_start: datetime
    window_end: datetime
    message_id: str
    created_at: datetime
    subscriber_version: int
    items: list[PlannedItem | MatchItem]
    attempts: int = 0
    last_error: str | None = None
    server_reply: str | None = None
    claimed_by: str | None = None
    claimed_at: datetime | None = None
    sent_at: datetime | None = None


@dataclass
class _Reader:
    email: str
    status: str


class MemoryOutbox:
    """The ``Outbox`` port over dicts. Thread-safe: every method holds one lock, which is
    what makes ``claim`` atomic here.

    A row needs its reader: register readers with ``add_subscriber`` first (the SQL store
    has them from the subscribers table).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rows: dict[int, _Row] = {}
        self._periods: dict[tuple[int, str], int] = {}  # (subscriber, period key) -> row id
        # (subscriber id, paper id) -> the id of the row that reserved it
        self._reserved: dict[tuple[int, str], int] = {}
        self._readers: dict[int, _Reader] = {}
        self._next_id = 1

    # -- test-only scaffolding: the readers the SQL store finds in its subscribers table ------
    def add_subscriber(
        self, subscriber_id: int, status: str = "active", *, email: str | None = None
    ) -> None:
        """Test-only: register a reader (``active``, ``unsubscribed`` or ``removed``).
        ``claim`` cancels the rows of readers who are not ``active``."""
        with self._lock:
            if subscriber_id in self._readers:
                raise ValueError(f"subscriber {subscriber_id} is already registered")
            address = email or f"subscriber-{subscriber_id}@memory.invalid"
            self._readers[subscriber_id] = _Reader(address, status)

    def set_status(self, subscriber_id: int, status: str) -> None:
        """Test-only: change a registered reader's status (an unsubscribe, a removal)."""
        with self._lock:
            self._readers[subscriber_id].status = status

    # -- planning ------------------------------------------------------------------------------
    def periods_present(self, pairs: Collection[tuple[int, str]]) -> set[tuple[int, str]]:
        with self._lock:
            return {pair for pair in pairs if pair in self._periods}

    def last_window_ends(self, subscriber_ids: Sequence[int]) -> dict[int, datetime]:
        wanted = set(subscriber_ids)
        out: dict[int, datetime] = {}
        with self._lock:
            for row in self._rows.values():
                if row.subscriber_id in wanted and row.status in COVERED:
                    known = out.get(row.subscriber_id)
                    if known is None or row.window_end > known:
                        out[row.subscriber_id] = row.window_end
        return out

    def reserved_papers(
        self, subscriber_ids: Sequence[int], paper_ids: Collection[str]
    ) -> dict[int, set[str]]:
        readers, papers = set(subscriber_ids), set(paper_ids)
        out: dict[int, set[str]] = {}
        with self._lock:
            for sid, pid in self._reserved:
                if sid in readers and pid in papers:
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
        subscriber_version: int,
        skip_if_empty: bool = True,
    ) -> int | None:
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
        now = _utc(now)
        with self._lock:
            # All or nothing, as the SQL store's one transaction: check every row first.
            for plan in plans:
                if plan.subscriber_id not in self._readers:
                    raise StoreError(f"no subscriber {plan.subscriber_id} (add_subscriber first)")
                if len({i.paper_id for i in plan.items}) != len(plan.items):
                    raise StoreError("a paper appears twice among the items")
                for moment in (plan.window_start, plan.window_end):
                    _utc(moment)  # a naive datetime is refused before anything is written
            return [self._plan(plan, now) for plan in plans]

    # -- claiming and marking --------------------------------------------------------------------
    def claim(self, *, limit: int, holder: str, now: datetime) -> list[int]:
        while True:  # a batch that was all cancelled is not the end of the queue
            taken, examined = self._claim_batch(limit=limit, holder=holder, now=now)
            if taken or not examined:
                return taken

    def _claim_batch(self, *, limit: int, holder: str, now: datetime) -> tuple[list[int], int]:
        now = _utc(now)
        with self._lock:
            due = sorted(
                (
                    r
                    for r in self._rows.values()
                    if r.status in ("pending", "deferred") and r.next_attempt_at <= now
                ),
                key=lambda r: (r.next_attempt_at, r.id),
            )[: max(limit, 0)]
            taken: list[int] = []
            for row in due:
                if self._readers[row.subscriber_id].status == "active":
                    row.status, row.claimed_by, row.claimed_at = "claimed", holder, now
                    taken.append(row.id)
                else:
                    row.status, row.last_error = "cancelled", "unsubscribed before sending"
                    self._release_items(row.id)
            return taken, len(due)

    def mark_sending(self, delivery_id: int, *, holder: str, now: datetime) -> bool:
        now = _utc(now)
        with self._lock:
            row = self._leaving(delivery_id, ("claimed",))
            if row is None or row.claimed_by != holder:
                return False
            row.status, row.claimed_at, row.attempts = "sending", now, row.attempts + 1
            return True

    def mark_sent(self, delivery_id: int, *, reply: str, now: datetime) -> bool:
        now = _utc(now)
        with self._lock:
            row = self._leaving(delivery_id, ("sending",))
            if row is None:
                return False
            row.status, row.sent_at, row.server_reply = "sent", now, reply[:1000]
            row.last_error = None
            return True

    def mark_deferred(
        self,
        delivery_id: int,
        *,
        error: str,
        retry_at: datetime,
        now: datetime,
        holder: str | None = None,
    ) -> bool:
        retry_at = _utc(retry_at)
        with self._lock:
            row = self._leaving(delivery_id, ("claimed", "sending"))
            if row is None or (holder is not None and row.claimed_by != holder):
                return False
            if row.status == "claimed":  # ended before "sending": an attempt all the same
                row.attempts += 1
            row.status, row.next_attempt_at, row.last_error = "deferred", retry_at, error[:2000]
            row.claimed_by = None
            return True

    def mark_failed(
        self, delivery_id: int, *, error: str, now: datetime, holder: str | None = None
    ) -> bool:
        with self._lock:
            row = self._leaving(delivery_id, ("claimed", "sending"))
            if row is None or (holder is not None and row.claimed_by != holder):
                return False
            row.status, row.last_error, row.claimed_by = "failed", error[:2000], None
            self._release_items(row.id)
            return True

    def mark_ambiguous(self, delivery_id: int, *, error: str, now: datetime) -> bool:
        with self._lock:
            row = self._leaving(delivery_id, ("sending",))
            if row is None:
                return False
            row.status, row.last_error, row.claimed_by = "ambiguous", error[:2000], None
            return True

    def release(self, delivery_ids: Sequence[int], *, holder: str) -> int:
        released = 0
        with self._lock:
            for delivery_id in set(delivery_ids):
                row = self._leaving(delivery_id, ("claimed",))
                if row is not None and row.claimed_by == holder:
                    self._unclaim(row)
                    released += 1
        return released

    # -- recovery and operator acts --------------------------------------------------------------
    def recover_stale(self, *, now: datetime, older_than: timedelta) -> tuple[int, list[int]]:
        cutoff = _utc(now) - older_than
        reclaimed, stuck = 0, []
        with self._lock:
            for row in sorted(self._rows.values(), key=lambda r: r.id):
                if row.claimed_at is None or row.claimed_at >= cutoff:
                    continue
                if row.status == "claimed":
                    self._unclaim(row)
                    reclaimed += 1
                elif row.status == "sending":
                    stuck.append(row.id)
        return reclaimed, stuck

    def recover_dead(
        self, *, host: str, alive: Callable[[int], bool], now: datetime
    ) -> tuple[int, list[int]]:
        verdicts: dict[int, bool] = {}  # ask about each pid once

        def dead(holder: str | None) -> bool:
            name, _, pid = (holder or "").rpartition(":")
            if name != host or not (pid.isascii() and pid.isdigit()) or int(pid) <= 0:
                return False
            if int(pid) not in verdicts:
                verdicts[int(pid)] = alive(int(pid))
            return not verdicts[int(pid)]

        reclaimed, stuck = 0, []
        with self._lock:
            for row in sorted(self._rows.values(), key=lambda r: r.id):
                if row.status not in ("claimed", "sending") or not dead(row.claimed_by):
                    continue
                if row.status == "claimed":
                    self._unclaim(row)
                    reclaimed += 1
                else:
                    stuck.append(row.id)
        return reclaimed, stuck

    def requeue(
        self,
        *,
        ids: Sequence[int] | None = None,
        statuses: Collection[str] = REQUEUEABLE,
        subscriber_id: int | None = None,
        now: datetime,
    ) -> int:
        wanted = set(statuses)
        if others := sorted(state for state in wanted if state not in REQUEUEABLE):
            raise ValueError(f"requeue moves only failed and ambiguous rows, not {others}")
        now = _utc(now)
        chosen = None if ids is None else set(ids)
        moved = 0
        with self._lock:
            for row in sorted(self._rows.values(), key=lambda r: r.id):  # the older row first
                if (
                    row.status not in wanted
                    or (chosen is not None and row.id not in chosen)
                    or (subscriber_id is not None and row.subscriber_id != subscriber_id)
                ):
                    continue
                kept = []
                for item in row.items:
                    key = (row.subscriber_id, item.paper_id)
                    if self._reserved.setdefault(key, row.id) == row.id:
                        kept.append(item)
                row.items = kept
                row.status, row.next_attempt_at = "pending", now
                row.claimed_by = row.claimed_at = None
                moved += 1
        return moved

    # -- reading ---------------------------------------------------------------------------------
    def list_deliveries(
        self,
        *,
        statuses: Collection[str] | None = None,
        subscriber_id: int | None = None,
        period_key: str | None = None,
        limit: int = 100,
    ) -> list[OutboxEntry]:
        with self._lock:
            rows = [
                r
                for r in self._rows.values()
                if (statuses is None or r.status in statuses)
                and (subscriber_id is None or r.subscriber_id == subscriber_id)
                and (period_key is None or r.period_key == period_key)
            ]
            rows.sort(key=lambda r: (r.created_at, r.id), reverse=True)
            return [self._entry(r) for r in rows[: max(limit, 0)]]

    def outbox_counts(self) -> dict[str, int]:
        with self._lock:
            return dict(Counter(r.status for r in self._rows.values()))

    # -- inside the lock -------------------------------------------------------------------------
    def _plan(self, plan: PlannedDelivery, now: datetime) -> int | None:
        sid = plan.subscriber_id
        if (sid, plan.period_key) in self._periods:
            return None
        fresh = [i for i in plan.items if (sid, i.paper_id) not in self._reserved]
        row = _Row(
            id=self._next_id,
            subscriber_id=sid,
            period_key=plan.period_key,
            status="skipped" if plan.skip_if_empty and not fresh else "pending",
            next_attempt_at=now,
            window_start=_utc(plan.window_start),
            window_end=_utc(plan.window_end),
            message_id=plan.message_id,
            created_at=now,
            subscriber_version=plan.subscriber_version,
            items=fresh,
        )
        self._next_id += 1
        self._rows[row.id] = row
        self._periods[sid, plan.period_key] = row.id
        for item in fresh:
            self._reserved[sid, item.paper_id] = row.id
        return row.id

    def _leaving(self, delivery_id: int, states: tuple[str, ...]) -> _Row | None:
        row = self._rows.get(delivery_id)
        return row if row is not None and row.status in states else None

    def _unclaim(self, row: _Row) -> None:
        row.status, row.claimed_by, row.claimed_at = "pending", None, None

    def _release_items(self, delivery_id: int) -> None:
        for key in [k for k, owner in self._reserved.items() if owner == delivery_id]:
            del self._reserved[key]

    def _entry(self, row: _Row) -> OutboxEntry:
        return OutboxEntry(
            id=row.id,
            subscriber_id=row.subscriber_id,
            email=self._readers[row.subscriber_id].email,
            period_key=row.period_key,
            status=row.status,
            attempts=row.attempts,
            next_attempt_at=row.next_attempt_at,
            created_at=row.created_at,
            sent_at=row.sent_at,
            message_id=row.message_id,
            last_error=row.last_error,
            item_count=len(row.items),
        )


def _utc(value: datetime) -> datetime:
    """What the SQL store does with a datetime: refuse a naive one, keep it in UTC."""
    if value.tzinfo is None:
        raise StoreError("naive datetime reached the outbox; use aware UTC datetimes")
    return value.astimezone(UTC)
