"""The procrastinate runner on real PostgreSQL, with `paperpost worker` subprocesses and a
real aiosmtpd sink: a tick planned as plan_block jobs gives every reader exactly one
digest, the same bytes as the embedded runner's (volatile headers aside), with one
matcher fit per worker process; neither a worker killed while planning or sending, a cut
database connection nor a daemon killed before it deferred loses or doubles a digest; and
the daemon's first ingest tick, as jobs fetching from a loopback HTTP server, comes before
its first dispatch."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from pipeline.app import App
from pipeline.daemon import Daemon
from pipeline.runner.jobs import DELIVER, STALLED_SECONDS
from tests.conftest import PG_BASE, SAMPLES
from tests.ingest_fakes import start_server, stop_server
from tests.runner_harness import (
    NOW,
    defer,
    fits_logged,
    normalised,
    outbox_counts,
    prepare,
    runner_config,
    start_worker,
    stop_worker,
    tick,
    wait_for,
)
from tests.smtpd import RunningServer

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def recipients(server: RunningServer) -> Counter[str]:
    return Counter(env.rcpt_tos[0] for env, _ in server.received)


def all_settled(config, count: int):  # type: ignore[no-untyped-def]
    def check() -> bool:
        counts = outbox_counts(config)
        return counts.get("sent", 0) + counts.get("ambiguous", 0) == count

    return check


def test_two_workers_send_each_reader_one_digest_as_the_embedded_runner_would(
    write_config, pg_url: str, smtp_server_factory, tmp_path: Path
) -> None:
    count = 2000
    sink, embedded_sink = smtp_server_factory(), smtp_server_factory()
    # The embedded runner, on its own database, at the same instant.
    embedded = runner_config(
        write_config,
        db_url=f"sqlite:///{tmp_path / 'embedded.db'}",
        port=embedded_sink.port,
        count=count,
        name="embedded.toml",
        runner="embedded",
    )
    with App(embedded, clock=lambda: NOW) as app:
        installation = app.store.installation_id()
        report = asyncio.run(app.run_once())
    assert report.deliver.sent == count

    config = runner_config(write_config, db_url=pg_url, port=sink.port, count=count)
    assert asyncio.run(prepare(config, installation=installation, plan=False)) == 0
    # The daemon's tick: who is due and the matcher's input digest; no fit, no rows.
    plan, daemon_fits = asyncio.run(tick(config, block_size=250))
    assert (plan.due, plan.blocks, plan.in_flight, daemon_fits) == (count, 8, 0, 0)
    assert outbox_counts(config) == {}
    again, _ = asyncio.run(tick(config, block_size=250))  # a tick while those jobs wait
    assert (again.due, again.in_flight, again.blocks) == (count, count, 0)
    logs = [tmp_path / "worker-1.log", tmp_path / "worker-2.log"]
    workers = [start_worker(config, log=log) for log in logs]
    try:
        wait_for(all_settled(config, count), timeout=600, what=f"{count} digests")
    finally:
        codes = [stop_worker(w) for w in workers]
    assert codes == [0, 0]  # SIGTERM: a clean stop
    assert outbox_counts(config) == {"sent": count}
    # Eight blocks, one fit per worker process that planned any (never one per block).
    fits = [fits_logged(log) for log in logs]
    assert max(fits) == 1, fits
    assert recipients(sink) == Counter(f"reader{n}@lab.example" for n in range(count))
    assert sorted(normalised(d) for _, d in sink.received) == sorted(
        normalised(d) for _, d in embedded_sink.received
    )


def test_kill_9_of_a_worker_mid_period_then_restart_sends_each_digest_once(
    write_config, pg_url: str, smtp_server: RunningServer
) -> None:
    count = 600
    config = runner_config(write_config, db_url=pg_url, port=smtp_server.port, count=count)
    assert asyncio.run(prepare(config)) == count
    asyncio.run(defer(config))
    first = start_worker(config)
    try:
        wait_for(lambda: len(smtp_server.received) >= 50, timeout=120, what="the first digests")
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == -signal.SIGKILL
    assert len(smtp_server.received) < count  # killed mid-period
    orphaned = job_states(config, DELIVER)  # its delivery jobs, `doing` with no worker
    assert "doing" in orphaned.values()
    orphaned = {job: status for job, status in orphaned.items() if status == "doing"}
    restarted = start_worker(config)
    try:
        wait_for(all_settled(config, count), timeout=300, what="the rest of the period")
        # The restarted worker's sweep settles the dead worker's jobs once its heartbeat
        # is STALLED_SECONDS old: retried (then run, succeeded and deleted) or, where
        # another job already waits under the slot's queueing lock, aborted.
        wait_for(
            lambda: all(
                job_states(config, DELIVER).get(job) in (None, "aborted") for job in orphaned
            ),
            timeout=STALLED_SECONDS + 90,
            what="the sweep to settle the killed worker's delivery jobs",
        )
    finally:
        assert stop_worker(restarted) == 0
    assert "doing" not in job_states(config, DELIVER).values()  # no lock held for ever
    counts = outbox_counts(config)
    got = recipients(smtp_server)
    # Never twice; every row sent exactly once at the sink; a message on the wire at the
    # kill may be ambiguous (at-most-once, the README's delivery guarantees), never resent.
    assert max(got.values()) == 1
    assert counts.get("sent", 0) + counts.get("ambiguous", 0) == count
    assert counts.get("ambiguous", 0) <= 4  # at most [mail] concurrency in flight
    assert len(got) >= counts["sent"]
    assert len(got) <= count


def job_states(config, task: str) -> dict[int, str]:  # type: ignore[no-untyped-def]
    """{job id: status} of ``task``'s procrastinate jobs."""
    engine = create_engine(config.database_url)
    try:
        with engine.connect() as conn:
            found = conn.execute(
                text("SELECT id, status FROM procrastinate_jobs WHERE task_name = :task"),
                {"task": task},
            )
            return {int(job): str(status) for job, status in found}
    finally:
        engine.dispose()


def plan_jobs_running(config) -> int:  # type: ignore[no-untyped-def]
    engine = create_engine(config.database_url)
    try:
        with engine.connect() as conn:
            return int(
                conn.execute(
                    text(
                        "SELECT count(*) FROM procrastinate_jobs "
                        "WHERE task_name = 'paperpost.plan_block' AND status = 'doing'"
                    )
                ).scalar_one()
            )
    finally:
        engine.dispose()


def test_kill_9_of_a_worker_while_it_plans_then_the_next_tick_retries_its_blocks(
    write_config, pg_url: str, smtp_server: RunningServer, tmp_path: Path
) -> None:
    count = 300
    config = runner_config(write_config, db_url=pg_url, port=smtp_server.port, count=count)
    asyncio.run(prepare(config, plan=False))
    plan, _ = asyncio.run(tick(config, block_size=25))
    assert plan.blocks == 12
    first = start_worker(config)
    try:
        # Killed as soon as its first block's rows are written: other blocks in hand.
        wait_for(lambda: sum(outbox_counts(config).values()) > 0, timeout=120, what="rows")
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
    assert sum(outbox_counts(config).values()) < count  # killed while planning
    orphaned = plan_jobs_running(config)  # `doing` forever: their worker is gone
    assert orphaned >= 1
    time.sleep(1.5)  # its last heartbeat is now older than the tick's threshold below
    retick, _ = asyncio.run(tick(config, block_size=25, stalled_seconds=1.0))
    assert retick.retried == orphaned
    assert plan_jobs_running(config) == 0
    restarted = start_worker(config)
    try:
        wait_for(all_settled(config, count), timeout=300, what="the rest of the period")
    finally:
        assert stop_worker(restarted) == 0
    got = recipients(smtp_server)
    counts = outbox_counts(config)
    assert max(got.values()) == 1
    assert counts.get("sent", 0) + counts.get("ambiguous", 0) == count
    assert len(got) >= counts["sent"]
    final, _ = asyncio.run(tick(config, block_size=25))
    assert (final.due, final.blocks) == (0, 0)  # nobody left due, nothing planned twice


def test_a_cut_database_connection_mid_batch_loses_nothing(
    write_config, pg_url: str, smtp_server: RunningServer
) -> None:
    count = 600
    config = runner_config(write_config, db_url=pg_url, port=smtp_server.port, count=count)
    assert asyncio.run(prepare(config)) == count
    asyncio.run(defer(config))
    tag = f"ppw_{uuid.uuid4().hex[:10]}"  # the worker's connections, and only them
    worker_config = runner_config(
        write_config,
        db_url=f"{pg_url}&application_name={tag}",
        port=smtp_server.port,
        count=count,
        name="worker.toml",
        # A row the cut leaves in `sending` is settled (ambiguous) by stale-claim recovery:
        # after 1 minute here instead of the default 10, so the test ends in time.
        mail="stale_claim_minutes = 1",
    )
    proc = start_worker(worker_config)
    admin = create_engine(PG_BASE, isolation_level="AUTOCOMMIT")
    try:
        wait_for(lambda: len(smtp_server.received) >= 50, timeout=120, what="the first digests")
        with admin.connect() as conn:
            cut = conn.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE application_name = :tag"
                ),
                {"tag": tag},
            ).scalar_one()
        assert cut >= 1
        if proc.poll() is not None:  # exited on the cut: restarted, as systemd would
            proc = start_worker(worker_config)
        wait_for(all_settled(config, count), timeout=300, what="the period after the cut")
    finally:
        assert stop_worker(proc) in (0, 1)
        admin.dispose()
    got = recipients(smtp_server)
    counts = outbox_counts(config)
    assert max(got.values()) == 1
    assert counts.get("sent", 0) + counts.get("ambiguous", 0) == count
    assert len(got) >= counts["sent"]


def test_rows_written_by_a_daemon_killed_before_deferring_are_swept_and_sent(
    write_config, pg_url: str, smtp_server: RunningServer
) -> None:
    count = 50
    config = runner_config(write_config, db_url=pg_url, port=smtp_server.port, count=count)
    assert asyncio.run(prepare(config)) == count  # rows written, no job deferred
    proc = start_worker(config)
    try:
        wait_for(all_settled(config, count), timeout=120, what="the sweep's jobs")
    finally:
        assert stop_worker(proc) == 0
    assert outbox_counts(config) == {"sent": count}
    assert recipients(smtp_server) == Counter(f"reader{n}@lab.example" for n in range(count))


def test_the_first_ingest_tick_runs_as_jobs_and_the_first_dispatch_sees_their_papers(
    write_config, pg_url: str, smtp_server: RunningServer, tmp_path: Path
) -> None:
    count = 20
    feeds = {f"/daily-{n}.rss": (SAMPLES / f"daily-papers-00{n}.rss").read_bytes() for n in (1, 4)}
    http = start_server()
    for path, body in feeds.items():
        http.server.serve(path, body, {"Content-Type": "application/rss+xml"})
    sources = "".join(
        f'\n[[sources]]\nname = "loopback{n}"\nkind = "feed"\n'
        f'url = "{http.server.url(path)}"\nallow_private = true\n'
        for n, path in enumerate(feeds)
    )
    config = runner_config(
        write_config, db_url=pg_url, port=smtp_server.port, count=count, sources=sources
    )
    asyncio.run(prepare(config, plan=False, ingest=False))  # nothing fetched yet

    async def first_ticks() -> int:
        daemon = Daemon(config, clock=lambda: NOW)
        assert daemon.runner is not None
        await daemon.runner.open()
        try:
            await daemon._ingest_due()  # the first ingest tick: jobs, waited for
            papers = await asyncio.to_thread(daemon.core.paper_count)
            await daemon._dispatch()  # the first dispatch: plan_block jobs
            return papers
        finally:
            await daemon.runner.close()
            await asyncio.to_thread(daemon.core.close)

    log = tmp_path / "worker.log"
    worker = start_worker(config, log=log)
    try:
        papers = asyncio.run(first_ticks())
        wait_for(all_settled(config, count), timeout=120, what="the first period")
    finally:
        assert stop_worker(worker) == 0
        stop_server(http)
    assert sorted(path for path, _ in http.server.requests) == sorted(feeds)  # one job each
    assert papers > 0  # stored by the workers' ingest jobs before the dispatch ran
    assert recipients(smtp_server) == Counter(f"reader{n}@lab.example" for n in range(count))
    engine = create_engine(config.database_url)
    try:
        with engine.connect() as conn:
            carried = conn.execute(
                text("SELECT count(DISTINCT delivery_id) FROM delivery_items")
            ).scalar_one()
    finally:
        engine.dispose()
    assert carried == count  # every first digest carries papers fetched by the jobs
