"""The procrastinate runner on real PostgreSQL, with `paperpost worker` subprocesses and a
real aiosmtpd sink: every reader gets exactly one digest, the same bytes as the embedded
runner's (volatile headers aside), and neither a killed worker, a cut database connection
nor a daemon killed before it deferred loses or doubles a digest."""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from pipeline.app import App
from tests.conftest import PG_BASE
from tests.runner_harness import (
    NOW,
    defer,
    normalised,
    outbox_counts,
    prepare,
    runner_config,
    start_worker,
    stop_worker,
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
    assert asyncio.run(prepare(config, installation=installation)) == count
    assert asyncio.run(defer(config)) == 2
    workers = [start_worker(config), start_worker(config)]
    try:
        wait_for(all_settled(config, count), timeout=600, what=f"{count} digests")
    finally:
        codes = [stop_worker(w) for w in workers]
    assert codes == [0, 0]  # SIGTERM: a clean stop
    assert outbox_counts(config) == {"sent": count}
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
    restarted = start_worker(config)
    try:
        wait_for(all_settled(config, count), timeout=300, what="the rest of the period")
    finally:
        assert stop_worker(restarted) == 0
    counts = outbox_counts(config)
    got = recipients(smtp_server)
    # Never twice; every row sent exactly once at the sink; a message on the wire at the
    # kill may be ambiguous (at-most-once, the README's delivery guarantees), never resent.
    assert max(got.values()) == 1
    assert counts.get("sent", 0) + counts.get("ambiguous", 0) == count
    assert counts.get("ambiguous", 0) <= 4  # at most [mail] concurrency in flight
    assert len(got) >= counts["sent"]
    assert len(got) <= count


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
