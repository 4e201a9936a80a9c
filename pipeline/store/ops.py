"""Operational state: the scheduler lease and the run log."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from pipeline.store.base import StoreBase
from pipeline.store.rows import LeaseRow, RunRow

# The fence ends a window one tick (the databases' microsecond) before an unfinished
# ingest run's start, so a paper stamped at that very instant is the next window's.
_TICK = timedelta(microseconds=1)
# How long an unfinished ingest run holds planning windows back. A run older than this is
# taken for dead (a killed process never finishes its row) and closed by the planner that
# finds it; if it was alive after all, its next save finds its row closed and writes
# nothing (its sources are fetched again by the next run).
INGEST_FENCE = timedelta(minutes=30)


@dataclass(frozen=True)
class Run:
    kind: str
    started_at: datetime
    finished_at: datetime | None
    summary: dict[str, Any]


# A lapsed run's summary, in the shape `paperpost status` reads ({source: outcome}).
_LAPSED = {"(run)": {"ok": False, "new": 0, "error": "unfinished for too long: closed"}}


class OpsStore(StoreBase):
    def acquire_lease(self, name: str, holder: str, *, ttl: timedelta, now: datetime) -> bool:
        """Take or renew the named lease; False while another holder's lease is unexpired."""
        try:
            with self.write() as s:
                row = s.get(LeaseRow, name, with_for_update=self.dialect == "postgresql")
                if row is None:
                    s.add(LeaseRow(name=name, holder=holder, expires_at=now + ttl))
                    return True
                if row.holder != holder and row.expires_at > now:
                    return False
                row.holder, row.expires_at = holder, now + ttl
                return True
        except Exception as exc:  # a concurrent first insert: the other process won
            if isinstance(exc.__cause__, IntegrityError):
                return False
            raise

    def release_lease(self, name: str, holder: str) -> None:
        with self.write() as s:
            row = s.get(LeaseRow, name)
            if row is not None and row.holder == holder:
                s.delete(row)

    def lease_holder(self, name: str, *, now: datetime) -> str | None:
        with self.read() as s:
            row = s.get(LeaseRow, name)
            return row.holder if row is not None and row.expires_at > now else None

    def record_run(
        self, kind: str, *, started: datetime, finished: datetime, summary: dict[str, Any]
    ) -> None:
        with self.write() as s:
            s.add(RunRow(kind=kind, started_at=started, finished_at=finished, summary=summary))

    def start_run(self, kind: str, *, started: datetime) -> int:
        """Record a run as started, committed before it writes anything (an unfinished
        ``ingest`` run is the planning fence: :meth:`ingest_fence`); the run's id."""
        with self.write() as s:
            row = RunRow(kind=kind, started_at=started, finished_at=None, summary={})
            s.add(row)
            s.flush()
            return row.id

    def finish_run(self, run_id: int, *, finished: datetime, summary: dict[str, Any]) -> None:
        with self.write() as s:
            row = s.get(RunRow, run_id)
            if row is not None:
                row.finished_at, row.summary = finished, summary

    def ingest_fence(self, *, now: datetime, timeout: timedelta = INGEST_FENCE) -> datetime:
        """Where a window planned at ``now`` may end: ``now``, or just before the start of
        the earliest unfinished ``ingest`` run younger than ``timeout``. Papers such a run
        stores are stamped at their write, after its start was committed, so they fall
        after the fence: into the next window, never into one already closed
        (docs/ingest.md, "Late commits")."""
        unfinished = (RunRow.kind == "ingest", RunRow.finished_at.is_(None))
        with self.read() as s:
            earliest = s.scalar(select(func.min(RunRow.started_at)).where(*unfinished))
        if earliest is not None and _aware(earliest) <= now - timeout:
            # Runs of dead processes: closed, committed before the window is read. A live
            # one's next save reads its row closed and writes nothing (PaperStore.
            # save_papers); one committing now holds its row's lock until it is visible.
            with self.write() as s:
                s.execute(
                    update(RunRow)
                    .where(*unfinished, RunRow.started_at <= now - timeout)
                    .values(finished_at=now, summary=_LAPSED)
                )
            with self.read() as s:
                earliest = s.scalar(select(func.min(RunRow.started_at)).where(*unfinished))
        if earliest is None:
            return now
        return min(now, _aware(earliest) - _TICK)

    def last_runs(self, limit: int = 10) -> list[Run]:
        with self.read() as s:
            rows = s.scalars(select(RunRow).order_by(RunRow.started_at.desc()).limit(limit))
            return [Run(r.kind, r.started_at, r.finished_at, dict(r.summary)) for r in rows]


def _aware(moment: datetime) -> datetime:
    """SQLite returns a naive UTC datetime from an aggregate (no column type on the way)."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
