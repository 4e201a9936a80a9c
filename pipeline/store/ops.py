"""Operational state: the scheduler lease and the run log."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from pipeline.store.base import StoreBase
from pipeline.store.rows import LeaseRow, RunRow


@dataclass(frozen=True)
class Run:
    kind: str
    started_at: datetime
    finished_at: datetime | None
    summary: dict[str, Any]


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

    def last_runs(self, limit: int = 10) -> list[Run]:
        with self.read() as s:
            rows = s.scalars(select(RunRow).order_by(RunRow.started_at.desc()).limit(limit))
            return [Run(r.kind, r.started_at, r.finished_at, dict(r.summary)) for r in rows]
