"""The procrastinate runner without PostgreSQL: its tasks run in-process through
procrastinate's in-memory connector against SQLite, a real Maildir or a refused SMTP
port: delivery, and planning a tick as plan_block jobs with one matcher fit. (tests/
test_runner_pg.py runs worker processes on real PostgreSQL.)"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from procrastinate.testing import InMemoryConnector
from sqlalchemy import update

from pipeline.app import App, FitMismatchError
from pipeline.config import load_config
from pipeline.cycle.plan import due_among, plan_due
from pipeline.errors import ConfigError, PaperpostError
from pipeline.runner.jobs import DELIVER, PLAN, Dispatcher, conninfo, sweep_cron
from pipeline.runner.worker import work
from pipeline.store import Store
from pipeline.store.rows import PAPERS
from tests.runner_harness import NOW, readers

WORKER = "\n[worker]\ndelivery_jobs = 3\n"
RUNNER = '\n[daemon]\nrunner = "procrastinate"\n' + WORKER


async def planned_config(write_config, count: int):  # type: ignore[no-untyped-def]
    """A SQLite config (the runner's tasks do not care which database) with ``count``
    readers whose period is planned at NOW."""
    config = load_config(write_config(subscribers=readers(count), extra=WORKER))
    with App(config, clock=lambda: NOW) as app:
        app.sync()
        await app.ingest(now=NOW)
        assert app.plan(now=NOW).planned == count
    return config


def test_procrastinate_needs_postgresql_and_check_says_so(write_config) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write_config(extra=RUNNER))
    assert 'daemon.runner = "procrastinate" needs PostgreSQL' in str(err.value)
    assert "database.url is sqlite:" in str(err.value)


def test_conninfo_keeps_the_schema_option_and_refuses_sqlite() -> None:
    url = "postgresql+psycopg://pp@127.0.0.1:5432/test?options=-csearch_path%3Dt_1"
    assert conninfo(url) == "postgresql://pp@127.0.0.1:5432/test?options=-csearch_path%3Dt_1"
    with pytest.raises(PaperpostError, match=r"needs a PostgreSQL database\.url"):
        conninfo("sqlite:///var/paperpost.db")


def test_sweep_cron_in_seconds_then_minutes() -> None:
    assert sweep_cron(30) == "* * * * * */30"
    assert sweep_cron(300) == "*/5 * * * *"


async def test_deferring_fills_each_slot_once_and_only_while_rows_are_open(
    write_config, tmp_path: Path
) -> None:
    config = await planned_config(write_config, 3)
    connector = InMemoryConnector()
    dispatcher = Dispatcher(config, connector=connector)
    await dispatcher.open()
    with App(config) as app:
        assert await dispatcher.defer_deliveries(app) == 3  # [worker] delivery_jobs
        assert await dispatcher.defer_deliveries(app) == 0  # those still wait: no pile-up
        assert sorted(j["queueing_lock"] for j in connector.jobs.values()) == [
            f"{DELIVER}-0",
            f"{DELIVER}-1",
            f"{DELIVER}-2",
        ]
    connector.reset()
    config_empty = load_config(
        write_config(subscribers="", name="empty.toml", db_url=f"sqlite:///{tmp_path / 'e.db'}")
    )
    with App(config_empty) as empty:
        assert await dispatcher.defer_deliveries(empty) == 0  # nothing open, nothing deferred
    await dispatcher.close()


async def test_a_worker_runs_the_deferred_jobs_and_sends_each_digest_once(
    write_config, tmp_path: Path
) -> None:
    config = await planned_config(write_config, 5)
    connector = InMemoryConnector()
    dispatcher = Dispatcher(config, connector=connector)
    await dispatcher.open()
    with App(config) as app:
        assert await dispatcher.defer_deliveries(app) == 3
    await dispatcher.close()
    # Three jobs for five rows: the first sends all, the others find nothing (harmless).
    assert await work(config, connector=connector, wait=False) == 0
    # Succeeded jobs are deleted. Only the delivery jobs count: the worker's periodic
    # deferrer may queue a sweep job just as a wait=False worker stops, left 'todo'.
    statuses = [j["status"] for j in connector.jobs.values() if j["task_name"] == DELIVER]
    assert statuses == []
    with App(config) as app:
        assert app.outbox_counts() == {"sent": 5}
    delivered = list((tmp_path / "maildir" / "new").iterdir())
    assert len(delivered) == 5


async def test_a_refused_smtp_connection_gives_the_batch_back_and_retries_the_job(
    write_config, tmp_path: Path, closed_port: int
) -> None:
    mail = f'[mail.smtp]\nhost = "127.0.0.1"\nport = {closed_port}\nsecurity = "none"\n'
    path = write_config(subscribers=readers(2), mail_extra="", transport="smtp")
    path.write_text(path.read_text() + "\n" + mail)
    config = load_config(path)
    with App(config, clock=lambda: NOW) as app:
        app.sync()
        await app.ingest(now=NOW)
        assert app.plan(now=NOW).planned == 2
    connector = InMemoryConnector()
    dispatcher = Dispatcher(config, connector=connector)
    await dispatcher.open()
    with App(config) as app:
        await dispatcher.defer_deliveries(app)
    await dispatcher.close()
    await work(config, connector=connector, wait=False)
    jobs = list(connector.jobs.values())
    # DeliveryAborted: procrastinate holds the job for a retry (30 s on), not failed.
    assert jobs and {j["status"] for j in jobs} == {"todo"}, jobs  # none failed
    retried = [j for j in jobs if j["attempts"] >= 1]
    assert retried and all(j["scheduled_at"] > datetime.now(UTC) for j in retried)
    with App(config) as app:
        assert app.outbox_counts() == {"pending": 2}  # untouched, for the retry


def test_dead_process_recovery_reads_a_job_holder(tmp_path: Path) -> None:
    store = Store.open(f"sqlite:///{tmp_path / 'p.db'}", auto_upgrade=True)
    holder_alive, holder_dead = "h1:100:job-7.0", "h1:200:job-8.1"
    now = datetime.now(UTC)
    # Two claims by two job holders of host h1; pid 200 is gone.
    from pipeline.store.rows import DELIVERIES, SUBSCRIBERS

    with store.engine.begin() as conn:
        sid = conn.execute(
            SUBSCRIBERS.insert().values(
                email="a@lab.example",
                status="active",
                origin="config",
                version=1,
                created_at=now,
                updated_at=now,
            )
        ).inserted_primary_key[0]
    ids = []
    for n, holder in enumerate((holder_alive, holder_dead)):
        with store.engine.begin() as conn:
            ids.append(
                conn.execute(
                    DELIVERIES.insert().values(
                        subscriber_id=sid,
                        period_key=f"2026-11-2{n}",
                        status="claimed",
                        claimed_by=holder,
                        claimed_at=now,
                        message_id=f"<m{n}@x>",
                        window_start=now - timedelta(days=1),
                        window_end=now,
                        created_at=now,
                        next_attempt_at=now,
                        attempts=0,
                    )
                ).inserted_primary_key[0]
            )
    returned, stuck = store.recover_dead(host="h1", alive=lambda pid: pid == 100, now=now)
    assert (returned, stuck) == (1, [])
    rows = {e.id: e.status for e in store.list_deliveries()}
    assert rows == {ids[0]: "claimed", ids[1]: "pending"}
    store.close()


class Fits(logging.Handler):
    """Counts the "matcher.fitted" events (App.plan_block) of this process."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += getattr(record, "event", None) == "matcher.fitted"


@pytest.fixture
def fits() -> Iterator[Fits]:
    handler, logger = Fits(), logging.getLogger("paperpost.app")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


async def synced_config(write_config, count: int):  # type: ignore[no-untyped-def]
    """Like :func:`planned_config`, without planning: the tick's work is left to do."""
    config = load_config(write_config(subscribers=readers(count), extra=WORKER))
    with App(config, clock=lambda: NOW) as app:
        app.sync()
        await app.ingest(now=NOW)
    return config


async def test_a_tick_defers_plan_blocks_that_a_worker_plans_with_one_fit_and_sends(
    write_config, tmp_path: Path, fits: Fits
) -> None:
    config = await synced_config(write_config, 5)
    connector = InMemoryConnector()
    dispatcher = Dispatcher(config, connector=connector, block_size=2)
    await dispatcher.open()
    with App(config, clock=lambda: NOW) as app:
        plan = await dispatcher.defer_plan(app, now=NOW)
        assert (plan.due, plan.blocks, plan.in_flight, plan.retried) == (5, 3, 0, 0)
        assert app.outbox_counts() == {} and app.fits == 0  # the clock neither fits nor writes
        again = await dispatcher.defer_plan(app, now=NOW)  # those jobs still wait
        assert (again.due, again.in_flight, again.blocks) == (5, 5, 0)
    blocks = [j["args"] for j in connector.jobs.values() if j["task_name"] == PLAN]
    assert sorted(i for b in blocks for i in b["subscriber_ids"]) == list(range(1, 6))
    assert {b["fit"] for b in blocks} == {plan.fit} and {b["now"] for b in blocks} == {
        NOW.isoformat()
    }
    await dispatcher.close()
    assert await work(config, connector=connector, wait=False) == 0
    assert fits.count == 1  # three blocks, one fit in this worker process
    # Each block deferred delivery of its rows (a worker with wait=False may stop first).
    assert any(j["task_name"] == DELIVER for j in connector.jobs.values())
    assert await work(config, connector=connector, wait=False) == 0
    with App(config) as app:
        assert app.outbox_counts() == {"sent": 5}
    assert len(list((tmp_path / "maildir" / "new").iterdir())) == 5


async def test_a_block_planned_twice_writes_nothing_twice(write_config) -> None:
    config = await synced_config(write_config, 4)
    with App(config, clock=lambda: NOW) as app:
        tick = app.plan_tick(now=NOW)
        assert tick.subscriber_ids == [1, 2, 3, 4]
        stale = due_among(app.store, [1, 2, 3], now=NOW)  # as a racing job saw them
        first = app.plan_block(now=NOW, subscriber_ids=[1, 2, 3], fit=tick.fit)
        assert (first.due, first.planned) == (3, 3)
        rows = app.outbox_counts()
        # Past the due check too, the outbox's unique (reader, period) decides.
        raced = plan_due(app.store, app.planning, stale, now=NOW)
        assert (raced.planned, raced.already_planned) == (0, 3)
        assert app.outbox_counts() == rows
        twice = app.plan_block(now=NOW, subscriber_ids=[1, 2, 3, 4], fit=tick.fit)
        assert (twice.due, twice.planned) == (1, 1)  # only the reader not planned yet
        assert app.outbox_counts() == {"pending": rows["pending"] + 1}
        assert app.plan_tick(now=NOW).subscriber_ids == []
        assert app.fits == 1


async def test_a_fit_that_differs_from_the_ticks_is_refused_and_its_readers_planned_next_tick(
    write_config,
) -> None:
    config = await synced_config(write_config, 3)
    connector = InMemoryConnector()
    dispatcher = Dispatcher(config, connector=connector)
    await dispatcher.open()
    with App(config, clock=lambda: NOW) as app:
        plan = await dispatcher.defer_plan(app, now=NOW)
        assert plan.blocks == 1
        with app.store.engine.begin() as conn:  # a paper replaced between tick and job
            conn.execute(update(PAPERS).values(title=PAPERS.c.title + " (v2)"))
        with pytest.raises(FitMismatchError, match="changed since the tick"):
            app.plan_block(now=NOW, subscriber_ids=[1], fit=plan.fit)
    await work(config, connector=connector, wait=False)
    [job] = [j for j in connector.jobs.values() if j["task_name"] == PLAN]
    assert job["status"] == "failed"
    with App(config, clock=lambda: NOW) as app:
        assert app.outbox_counts() == {}  # nothing planned on a different fit
        retick = await dispatcher.defer_plan(app, now=NOW)
        assert (retick.due, retick.in_flight, retick.blocks) == (3, 0, 1)
        assert retick.fit != plan.fit
    await dispatcher.close()
    assert await work(config, connector=connector, wait=False) == 0
    assert await work(config, connector=connector, wait=False) == 0  # its deliveries
    with App(config) as app:
        assert app.outbox_counts() == {"sent": 3}
