"""The daemon's scheduler: a few periodic jobs on APScheduler 3, behind a database lease.

All APScheduler code lives here ("one library, one home"). The daemon hands in
a handful of ``PeriodicJob`` values (ingest, dispatch tick, maintenance);
there is never one job per subscriber: which digests are due is computed
from the database on every dispatch tick, so catch-up after downtime does not
depend on which triggers fired.

Only one daemon runs the lease-bound jobs at a time: a lease row with an
expiry (``acquire_lease``), renewed every third of its lifetime. A second
daemon logs who holds the lease, stands by, and takes over (running the
lease-bound jobs at once) when the lease expires or is released. The outbox's
unique key and atomic claim remain the guarantee against double sends; the
lease keeps the work in one place and the logs clear.

Jobs are coalesced (a backlog of missed runs is one run), never overlap with
themselves, and a run that is late by more than its misfire grace is skipped
(the next tick does the same work from the database's state).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.schedulers.base import STATE_RUNNING
from apscheduler.triggers.interval import IntervalTrigger

log = logging.getLogger("paperpost.scheduler")

Clock = Callable[[], datetime]
_LEASE_JOB = "lease"


class LeaseStore(Protocol):
    """The store's lease operations (see ``pipeline.store.ops``)."""

    def acquire_lease(self, name: str, holder: str, *, ttl: timedelta, now: datetime) -> bool: ...

    def release_lease(self, name: str, holder: str) -> None: ...

    def lease_holder(self, name: str, *, now: datetime) -> str | None: ...


@dataclass(frozen=True, slots=True)
class PeriodicJob:
    """One recurring job. ``run`` takes no arguments and reads what it needs when it runs."""

    name: str
    every: timedelta
    run: Callable[[], Awaitable[object]]
    needs_lease: bool = True
    run_at_start: bool = True


class Scheduler:
    """Runs ``PeriodicJob`` values on the running asyncio loop; drains on stop."""

    def __init__(
        self,
        jobs: Sequence[PeriodicJob],
        *,
        leases: LeaseStore,
        holder: str,
        clock: Clock,
        lease_name: str = "scheduler",
        lease_ttl: timedelta = timedelta(seconds=90),
    ) -> None:
        names = [j.name for j in jobs]
        if len(set(names)) != len(names) or _LEASE_JOB in names:
            raise ValueError(f"job names must be unique and not {_LEASE_JOB!r}: {names}")
        if lease_ttl <= timedelta(seconds=3):
            raise ValueError("lease_ttl must be longer than 3 seconds")
        self._jobs = {j.name: j for j in jobs}
        self._leases = leases
        self._holder = holder
        self._clock = clock
        self._lease_name = lease_name
        self._lease_ttl = lease_ttl
        self._holds_lease = False
        self._known_holder: str | None = None
        self._running: set[asyncio.Task[object]] = set()
        self._runs: dict[str, int] = dict.fromkeys(self._jobs, 0)
        self._aps = AsyncIOScheduler(
            timezone=UTC,
            job_defaults={"coalesce": True, "max_instances": 1},
        )

    @property
    def holds_lease(self) -> bool:
        return self._holds_lease

    @property
    def holder(self) -> str:
        return self._holder

    def runs(self, name: str) -> int:
        """How many times job ``name`` has run to completion or failure (for status and tests)."""
        return self._runs.get(name, 0)

    @property
    def running_jobs(self) -> int:
        return len(self._running)

    async def start(self) -> None:
        """Try the lease, then start the timers. Call from inside the running loop."""
        await self._renew_lease()
        renew_every = self._lease_ttl / 3
        self._aps.add_job(
            self._renew_lease,
            IntervalTrigger(seconds=renew_every.total_seconds(), timezone=UTC),
            id=_LEASE_JOB,
            name=_LEASE_JOB,
            misfire_grace_time=max(1, int(renew_every.total_seconds())),
        )
        for job in self._jobs.values():
            self._add(job)
        self._aps.start()

    def _add(self, job: PeriodicJob) -> None:
        seconds = job.every.total_seconds()
        # APScheduler adds a job paused when next_run_time is passed as None: omit it instead.
        start = {"next_run_time": datetime.now(UTC)} if job.run_at_start else {}
        self._aps.add_job(
            self._run,
            IntervalTrigger(seconds=seconds, timezone=UTC),
            args=(job.name,),
            id=job.name,
            name=job.name,
            misfire_grace_time=max(1, int(seconds)),
            **start,
        )

    def set_jobs(self, jobs: Sequence[PeriodicJob]) -> None:
        """Apply a reloaded job set: add new jobs, drop removed ones, re-time changed ones."""
        wanted = {j.name: j for j in jobs}
        for name in list(self._jobs):
            if name not in wanted:
                self._aps.remove_job(name)
                del self._jobs[name]
        for name, job in wanted.items():
            old = self._jobs.get(name)
            self._jobs[name] = job
            self._runs.setdefault(name, 0)
            if old is None:
                self._add(job)
            elif old.every != job.every:
                self._aps.reschedule_job(
                    name, trigger=IntervalTrigger(seconds=job.every.total_seconds(), timezone=UTC)
                )
                log.info("job %s now runs every %s", name, job.every)

    def run_now(self, name: str) -> None:
        """Run job ``name`` as soon as possible (it still never overlaps with itself).

        Does nothing once ``stop`` has begun or before ``start``.
        """
        if self._aps.state == STATE_RUNNING and name in self._jobs:
            self._aps.modify_job(name, next_run_time=datetime.now(UTC))

    async def _run(self, name: str) -> None:
        job = self._jobs.get(name)
        if job is None:
            return
        if job.needs_lease and not self._holds_lease:
            log.debug("job %s skipped: instance %s does not hold the lease", name, self._holder)
            return
        task = asyncio.current_task()
        assert task is not None
        self._running.add(task)
        try:
            await job.run()
        except Exception:  # one failed run must not stop the daemon; the next tick retries
            log.exception("job %s failed", name)
        finally:
            self._runs[name] = self._runs.get(name, 0) + 1
            self._running.discard(task)

    def next_run(self, name: str) -> datetime | None:
        job = self._aps.get_job(name)
        return None if job is None else job.next_run_time

    async def renew_lease(self) -> bool:
        """Take or renew the lease now; runs the lease-bound jobs at once on a takeover."""
        await self._renew_lease()
        return self._holds_lease

    async def _renew_lease(self) -> None:
        now = self._clock()
        try:
            held = await asyncio.to_thread(
                self._leases.acquire_lease,
                self._lease_name,
                self._holder,
                ttl=self._lease_ttl,
                now=now,
            )
            other = (
                None
                if held
                else await asyncio.to_thread(self._leases.lease_holder, self._lease_name, now=now)
            )
        except Exception as exc:  # the database is away: stop acting as the leader until it is back
            if self._holds_lease:
                log.error("could not renew the %s lease: %s; standing by", self._lease_name, exc)
            self._holds_lease = False
            return
        if held and not self._holds_lease:
            log.info("instance %s holds the %s lease; running jobs", self._holder, self._lease_name)
            self._holds_lease = True
            self._known_holder = None
            if self._aps.state == STATE_RUNNING:
                for job in self._jobs.values():
                    if job.needs_lease:
                        self.run_now(job.name)
        elif not held:
            if self._holds_lease:
                log.warning(
                    "instance %s lost the %s lease to %s", self._holder, self._lease_name, other
                )
            elif other != self._known_holder:
                log.warning(
                    "another instance (%s) holds the %s lease; %s stands by and takes over "
                    "when it expires",
                    other,
                    self._lease_name,
                    self._holder,
                )
            self._holds_lease = False
            self._known_holder = other

    async def stop(self, *, grace: float) -> bool:
        """Start no new runs, give running ones ``grace`` seconds to finish, release the lease.

        Returns True when every running job finished in time; jobs still running
        after the grace period are cancelled.
        """
        if self._aps.running:
            self._aps.pause()
        pending: set[asyncio.Task[object]] = set()
        if self._running:
            log.info("waiting up to %.0f s for %d running job(s)", grace, len(self._running))
            _, pending = await asyncio.wait(set(self._running), timeout=grace)
        for task in pending:
            task.cancel()
        if pending:
            log.warning("cancelled %d job(s) still running after %.0f s", len(pending), grace)
            await asyncio.gather(*pending, return_exceptions=True)
        if self._aps.running:
            self._aps.shutdown(wait=False)
            await asyncio.sleep(0)  # APScheduler finishes its shutdown on the next loop turn
        if self._holds_lease:
            try:
                await asyncio.to_thread(self._leases.release_lease, self._lease_name, self._holder)
            except Exception as exc:  # it expires on its own
                log.warning("could not release the %s lease: %s", self._lease_name, exc)
            self._holds_lease = False
        return not pending
