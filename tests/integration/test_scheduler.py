"""The APScheduler runner: lease-bound jobs, standby and takeover, draining on stop."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pipeline.schedule.scheduler import PeriodicJob, Scheduler
from pipeline.store import Store
from tests.web_fakes import FakeClock

EVENT_TIMEOUT = 20  # seconds: a safety net against hangs, never a timing assertion


@dataclass
class MemoryLeases:
    """The store's lease semantics, in memory."""

    rows: dict[str, tuple[str, datetime]] = field(default_factory=dict)
    fail: bool = False

    def acquire_lease(self, name: str, holder: str, *, ttl: timedelta, now: datetime) -> bool:
        if self.fail:
            raise ConnectionError("database went away")
        row = self.rows.get(name)
        if row is not None and row[0] != holder and row[1] > now:
            return False
        self.rows[name] = (holder, now + ttl)
        return True

    def release_lease(self, name: str, holder: str) -> None:
        if self.rows.get(name, ("", None))[0] == holder:
            del self.rows[name]

    def lease_holder(self, name: str, *, now: datetime) -> str | None:
        row = self.rows.get(name)
        return row[0] if row is not None and row[1] > now else None


def counter_job(
    name: str, *, needs_lease: bool = True, run_at_start: bool = True, every: float = 3600
) -> tuple[PeriodicJob, asyncio.Event, list[int]]:
    done = asyncio.Event()
    calls: list[int] = []

    async def run() -> None:
        calls.append(1)
        done.set()

    job = PeriodicJob(name, timedelta(seconds=every), run, needs_lease, run_at_start)
    return job, done, calls


async def wait(event: asyncio.Event) -> None:
    async with asyncio.timeout(EVENT_TIMEOUT):
        await event.wait()


async def test_the_lease_holder_runs_its_jobs_at_start() -> None:
    job, done, calls = counter_job("dispatch")
    scheduler = Scheduler([job], leases=MemoryLeases(), holder="a", clock=FakeClock())
    await scheduler.start()
    try:
        assert scheduler.holds_lease
        await wait(done)
        assert calls == [1]
    finally:
        assert await scheduler.stop(grace=5)


async def test_a_standby_instance_logs_the_holder_runs_nothing_and_takes_over_on_expiry(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    leases = MemoryLeases(rows={"scheduler": ("host-a:1", clock() + timedelta(seconds=90))})
    job, done, calls = counter_job("dispatch")
    probe, probed, _ = counter_job("probe", needs_lease=False)
    scheduler = Scheduler([job, probe], leases=leases, holder="host-b:2", clock=clock)
    caplog.set_level(logging.INFO, logger="paperpost.scheduler")
    await scheduler.start()
    try:
        await wait(probed)  # both start-up runs were submitted; dispatch's came first
        assert not scheduler.holds_lease
        assert calls == []
        assert "another instance (host-a:1) holds the scheduler lease" in caplog.text
        assert await scheduler.renew_lease() is False  # still held: nothing changes
        assert caplog.text.count("another instance") == 1  # logged once, not every renewal
        clock.now += timedelta(seconds=91)
        assert await scheduler.renew_lease() is True
        await wait(done)  # a takeover runs the lease-bound jobs at once
        assert calls == [1]
        assert "instance host-b:2 holds the scheduler lease" in caplog.text
    finally:
        await scheduler.stop(grace=5)
    assert "scheduler" not in leases.rows  # released on stop


async def test_losing_the_database_means_standing_by(caplog: pytest.LogCaptureFixture) -> None:
    leases = MemoryLeases()
    job, _, _ = counter_job("dispatch", run_at_start=False)
    scheduler = Scheduler([job], leases=leases, holder="a", clock=FakeClock())
    await scheduler.start()
    try:
        assert scheduler.holds_lease
        leases.fail = True
        assert await scheduler.renew_lease() is False
        assert "could not renew the scheduler lease: database went away" in caplog.text
    finally:
        await scheduler.stop(grace=5)


async def test_stop_waits_for_a_running_job_and_starts_no_new_runs() -> None:
    started, release = asyncio.Event(), asyncio.Event()
    finished: list[str] = []

    async def slow() -> None:
        started.set()
        await release.wait()
        finished.append("slow")

    scheduler = Scheduler(
        [PeriodicJob("dispatch", timedelta(hours=1), slow)],
        leases=MemoryLeases(),
        holder="a",
        clock=FakeClock(),
    )
    await scheduler.start()
    await wait(started)
    stopping = asyncio.create_task(scheduler.stop(grace=EVENT_TIMEOUT))
    for _ in range(20):
        await asyncio.sleep(0)  # let stop() reach its wait; it must not finish on its own
    assert not stopping.done()
    assert scheduler.running_jobs == 1
    release.set()
    assert await stopping is True
    assert finished == ["slow"]
    assert scheduler.running_jobs == 0


async def test_stop_cancels_a_job_that_outlives_the_grace_period(
    caplog: pytest.LogCaptureFixture,
) -> None:
    started = asyncio.Event()
    cancelled: list[bool] = []

    async def stuck() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    scheduler = Scheduler(
        [PeriodicJob("dispatch", timedelta(hours=1), stuck)],
        leases=MemoryLeases(),
        holder="a",
        clock=FakeClock(),
    )
    await scheduler.start()
    await wait(started)
    assert await scheduler.stop(grace=0.01) is False
    assert cancelled == [True]
    assert "cancelled 1 job(s) still running" in caplog.text


async def test_a_failing_job_is_logged_and_the_scheduler_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def boom() -> None:
        raise RuntimeError("feed exploded")

    job, done, _ = counter_job("after", needs_lease=False)
    scheduler = Scheduler(
        [PeriodicJob("boom", timedelta(hours=1), boom), job],
        leases=MemoryLeases(),
        holder="a",
        clock=FakeClock(),
    )
    await scheduler.start()
    try:
        await wait(done)
        assert scheduler.runs("boom") == 1
        assert "job boom failed" in caplog.text
        assert "feed exploded" in caplog.text
    finally:
        await scheduler.stop(grace=5)


async def test_set_jobs_adds_removes_and_retimes() -> None:
    a, _, _ = counter_job("ingest", run_at_start=False, every=600)
    b, _, _ = counter_job("maintenance", run_at_start=False, every=3600)
    scheduler = Scheduler([a, b], leases=MemoryLeases(), holder="x", clock=FakeClock())
    await scheduler.start()
    try:
        before = datetime.now(UTC)
        a_slow, _, _ = counter_job("ingest", run_at_start=False, every=6 * 3600)
        c, c_done, _ = counter_job("dispatch")
        scheduler.set_jobs([a_slow, c])
        assert scheduler.next_run("maintenance") is None
        next_ingest = scheduler.next_run("ingest")
        assert next_ingest is not None and next_ingest > before + timedelta(hours=5)
        await wait(c_done)
    finally:
        await scheduler.stop(grace=5)


@pytest.mark.parametrize(
    ("jobs", "message"),
    [
        (["a", "a"], "job names must be unique"),
        (["lease"], "job names must be unique and not 'lease'"),
    ],
    ids=["duplicate", "reserved-name"],
)
def test_job_names_are_checked(jobs: list[str], message: str) -> None:
    async def nothing() -> None:
        return None

    with pytest.raises(ValueError, match=message):
        Scheduler(
            [PeriodicJob(n, timedelta(minutes=1), nothing) for n in jobs],
            leases=MemoryLeases(),
            holder="x",
            clock=FakeClock(),
        )


async def test_two_schedulers_on_one_sqlite_database_share_one_lease(tmp_path: Path) -> None:
    store = Store.open(f"sqlite:///{tmp_path / 'paperpost.db'}")
    clock = FakeClock()
    made: list[tuple[Scheduler, list[int], asyncio.Event]] = []
    for holder in ("host:1", "host:2"):
        job, done, calls = counter_job("dispatch")
        made.append((Scheduler([job], leases=store, holder=holder, clock=clock), calls, done))
    (first, first_calls, first_done), (second, second_calls, second_done) = made
    try:
        await first.start()
        await second.start()
        await wait(first_done)
        assert first.holds_lease and not second.holds_lease
        assert store.lease_holder("scheduler", now=clock()) == "host:1"
        assert await first.stop(grace=5)
        assert store.lease_holder("scheduler", now=clock()) is None
        assert await second.renew_lease()
        await wait(second_done)
        assert (first_calls, second_calls) == ([1], [1])
    finally:
        await second.stop(grace=5)
        store.close()


async def test_run_now_is_ignored_before_start_after_stop_and_for_unknown_jobs() -> None:
    job, done, calls = counter_job("dispatch", run_at_start=False)
    scheduler = Scheduler([job], leases=MemoryLeases(), holder="a", clock=FakeClock())
    scheduler.run_now("dispatch")  # not started: nothing happens, nothing raises
    await scheduler.start()
    scheduler.run_now("no-such-job")
    scheduler.run_now("dispatch")
    await wait(done)
    assert await scheduler.stop(grace=5)
    scheduler.run_now("dispatch")
    assert calls == [1]
