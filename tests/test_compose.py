"""Composing in worker processes (``[mail] render_processes``): the same bytes as composing
in the sender, on both databases, and a worker that dies loses nothing and sends nothing
twice. Real worker processes, a real aiosmtpd on 127.0.0.1."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import multiprocessing
import os
import signal
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from pipeline.app import App, run_once
from pipeline.config import Config, load_config
from pipeline.cycle.compose import ComposePool, Composer, ComposeWorkerError, make_composer
from pipeline.domain import Commit, Envelope, Mailer
from pipeline.store import Store
from tests.smtpd import RunningServer

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
READER = """
[[subscribers]]
email = "reader{n}@lab.example"
name = "Reader {n} Ünïcode"
timezone = "Europe/London"
send_at = "00:00"
[subscribers.interests]
query = 'abs:RLHF OR ti:"preference optimization" OR abs:"reward model" OR ti:agent*'
"""


def readers(count: int) -> str:
    return "".join(READER.format(n=n) for n in range(count))


def config_with(
    write_config,  # type: ignore[no-untyped-def]
    server: RunningServer,
    *,
    processes: int,
    count: int,
    db_url: str | None = None,
    name: str = "paperpost.toml",
    mail: str = "",
) -> Config:
    extra = (
        f"render_processes = {processes}\n{mail}\n"
        f'[mail.smtp]\nhost = "127.0.0.1"\nport = {server.port}\nsecurity = "none"\n'
    )
    path = write_config(
        db_url=db_url, transport="smtp", mail_extra=extra, subscribers=readers(count), name=name
    )
    return load_config(path)


async def test_workers_send_byte_for_byte_what_the_sender_would(
    write_config, smtp_server_factory, tmp_path: Path
) -> None:
    inline_server, pool_server = smtp_server_factory(), smtp_server_factory()
    count = 30  # more than the first chunks, so several chunks cross to the worker
    inline = config_with(
        write_config,
        inline_server,
        processes=0,
        count=count,
        db_url=f"sqlite:///{tmp_path / 'inline.db'}",
        name="inline.toml",
    )
    pooled = config_with(
        write_config,
        pool_server,
        processes=1,
        count=count,
        db_url=f"sqlite:///{tmp_path / 'pooled.db'}",
        name="pooled.toml",
    )
    first = await run_once(inline, clock=lambda: NOW)
    # Message-IDs carry the installation's id: give the second database the first's, so
    # the two runs must produce the very same bytes.
    inline_store = Store.open(inline.database_url)
    installation = inline_store.installation_id()
    inline_store.close()
    Store.open(pooled.database_url, auto_upgrade=True).close()
    with create_engine(pooled.database_url).begin() as conn:
        conn.execute(
            text("INSERT INTO meta (key, value) VALUES ('installation_id', :v)"),
            {"v": installation},
        )
    second = await run_once(pooled, clock=lambda: NOW)
    assert first.deliver.sent == second.deliver.sent == count
    assert second.deliver.aborted is None
    # Same outbox keys, clock and secret: the very same messages, bytes and all.
    assert sorted(data for _, data in pool_server.received) == sorted(
        data for _, data in inline_server.received
    )
    again = await run_once(pooled, clock=lambda: NOW + timedelta(minutes=5))
    assert again.deliver.sent == 0
    assert len(pool_server.received) == count


async def test_workers_read_postgres_through_the_configured_schema(
    write_config, pg_url: str, smtp_server: RunningServer
) -> None:
    Store.open(pg_url, auto_upgrade=True).close()
    config = config_with(write_config, smtp_server, processes=2, count=20, db_url=pg_url)
    report = await run_once(config, clock=lambda: NOW)
    assert (report.deliver.sent, report.deliver.aborted) == (20, None)
    recipients = Counter(env.rcpt_tos[0] for env, _ in smtp_server.received)
    assert recipients == Counter(f"reader{n}@lab.example" for n in range(20))


class KillsWorkers:
    """Hands the first message over, then kills every worker process (as the kernel's
    OOM killer would), so the composing that is still to come fails. (With
    ``ProcessPoolExecutor`` this hung the sender for good whenever the kill landed while
    the worker was writing a reply.)"""

    def __init__(self, inner: Mailer) -> None:
        self.inner = inner
        self.killed: list[int] = []

    async def send(self, envelope: Envelope, *, commit: Commit | None = None) -> str:
        reply = await self.inner.send(envelope, commit=commit)
        if not self.killed:
            for child in multiprocessing.active_children():
                assert child.pid is not None
                os.kill(child.pid, signal.SIGKILL)
                self.killed.append(child.pid)
        return reply

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_a_dead_worker_aborts_the_run_and_loses_nothing(
    write_config, smtp_server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    count = 40
    config = config_with(
        write_config, smtp_server, processes=1, count=count, mail="concurrency = 1"
    )
    killer = KillsWorkers(App(config).mailer())
    with caplog.at_level(logging.ERROR, logger="paperpost.deliver"):
        first = await run_once(config, clock=lambda: NOW, mailer=killer)
    await killer.aclose()
    assert killer.killed, "no worker process was running"
    assert first.deliver.aborted is not None
    assert first.deliver.aborted.startswith(
        "composing digests failed: ComposeWorkerError('compose worker "
    )
    assert "exited (exit code -9)" in first.deliver.aborted
    assert "composing digests failed" in caplog.text
    assert first.deliver.sent >= 1
    store = Store.open(config.database_url)
    try:
        counts = store.outbox_counts()
    finally:
        store.close()
    # Nothing left claimed or in flight: the unsent rows went straight back to the queue.
    assert counts == {"sent": first.deliver.sent, "pending": count - first.deliver.sent}
    second = await run_once(config, clock=lambda: NOW + timedelta(minutes=1))
    assert (second.deliver.sent, second.deliver.aborted) == (count - first.deliver.sent, None)
    recipients = Counter(env.rcpt_tos[0] for env, _ in smtp_server.received)
    assert recipients == Counter(f"reader{n}@lab.example" for n in range(count))


def test_in_memory_database_composes_in_the_sender(
    write_config, smtp_server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    config = config_with(write_config, smtp_server, processes=2, count=1)
    store = Store.open(config.database_url)
    try:
        assert isinstance(make_composer(config, store), ComposePool)
        memory = dataclasses.replace(config, database_url="sqlite://")
        with caplog.at_level(logging.WARNING, logger="paperpost.deliver"):
            composer = make_composer(memory, store)
        assert type(composer) is Composer
        assert "render_processes = 2 ignored: an in-memory database" in caplog.text
        no_workers = config.file.model_copy(
            update={"mail": config.file.mail.model_copy(update={"render_processes": 0})}
        )
        plain = make_composer(dataclasses.replace(config, file=no_workers), store)
        assert type(plain) is Composer
    finally:
        store.close()


class StopsAfterFirst:
    """Sets the run's stop event (as SIGTERM does in the daemon) after one message."""

    def __init__(self, inner: Mailer, stopping: asyncio.Event) -> None:
        self.inner = inner
        self.stopping = stopping

    async def send(self, envelope: Envelope, *, commit: Commit | None = None) -> str:
        reply = await self.inner.send(envelope, commit=commit)
        self.stopping.set()
        return reply

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_stop_mid_run_gives_rows_back_and_stops_the_workers(
    write_config, smtp_server: RunningServer
) -> None:
    count = 40
    config = config_with(
        write_config, smtp_server, processes=1, count=count, mail="concurrency = 1"
    )
    stopping = asyncio.Event()
    mailer = StopsAfterFirst(App(config).mailer(), stopping)
    store = Store.open(config.database_url)
    try:
        app = App(config, store=store, clock=lambda: NOW)
        app.sync()
        await app.ingest()
        _plan, report = await app.dispatch(mailer=mailer, stopping=stopping)
        await mailer.aclose()
        assert (report.sent, report.aborted) == (1, None)
        assert store.outbox_counts() == {"sent": 1, "pending": count - 1}
        assert multiprocessing.active_children() == []  # the worker was stopped and joined
        later = App(config, store=store, clock=lambda: NOW + timedelta(minutes=1))
        rest = await later.dispatch()
        assert rest[1].sent == count - 1
    finally:
        store.close()
    recipients = Counter(env.rcpt_tos[0] for env, _ in smtp_server.received)
    assert recipients == Counter(f"reader{n}@lab.example" for n in range(count))


async def test_more_workers_than_asyncio_has_default_threads(
    write_config, smtp_server: RunningServer
) -> None:
    # Each worker's replies are read on a thread of the pool's own: asyncio's default pool
    # has min(32, cores + 4) threads, shared with the rest of the daemon. Every worker gets
    # chunks, everything is delivered once, and every worker is stopped at the end.
    processes = min(32, (os.cpu_count() or 1) + 4) + 1
    count = 260  # chunks of 4, 8, 16, 32, 64, 64, 64 ...: every worker gets one
    config = config_with(write_config, smtp_server, processes=processes, count=count)
    report = await asyncio.wait_for(run_once(config, clock=lambda: NOW), timeout=300)
    assert (report.deliver.sent, report.deliver.aborted) == (count, None)
    assert multiprocessing.active_children() == []


async def test_a_failure_inside_a_worker_comes_back_with_its_traceback(write_config) -> None:
    config = load_config(write_config(mail_extra="render_processes = 1"))  # Maildir
    planned = await run_once(config, clock=lambda: NOW)
    assert planned.deliver.sent == 3
    pool = ComposePool(config, 1)

    async def jobs():  # type: ignore[no-untyped-def]
        yield 1, None  # a row that exists, with no schedule: a bug, not a bad digest

    try:
        with pytest.raises(ComposeWorkerError, match="compose worker failed: Traceback") as err:
            async for _letter in pool.letters(jobs(), clock=lambda: NOW):
                pass
        assert "AttributeError" in str(err.value)
        assert multiprocessing.active_children() == []  # the run's workers were stopped
    finally:
        pool.close()
