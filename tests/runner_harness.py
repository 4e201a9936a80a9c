"""Helpers of the runner tests: a PostgreSQL config with runner = "procrastinate", a period
planned by the daemon's use case (in one process, or as plan_block jobs of a tick), and
`paperpost worker` subprocesses logging to a file."""

from __future__ import annotations

import asyncio
import email
import email.policy
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from pipeline.app import App
from pipeline.config import Config, load_config
from pipeline.runner.jobs import STALLED_SECONDS, Dispatcher, PlanDispatch
from pipeline.runner.schema import apply_schema_async
from tests.factories import MONDAY_NOON as NOW  # the clock of the runner tests
from tests.factories import SECRET

READER = """
[[subscribers]]
email = "reader{n}@lab.example"
name = "Reader {n}"
timezone = "Europe/London"
send_at = "00:00"
[subscribers.interests]
query = 'abs:RLHF OR ti:"preference optimization" OR abs:"reward model" OR ti:agent*'
"""
ENV = {**os.environ, "PAPERPOST_TEST_SECRET": SECRET}


def readers(count: int) -> str:
    return "".join(READER.format(n=n) for n in range(count))


def runner_config(
    write_config: Callable[..., Path],
    *,
    db_url: str,
    port: int,
    count: int,
    name: str = "paperpost.toml",
    runner: str = "procrastinate",
    mail: str = "",
    worker: str = "",
    sources: str | None = None,
) -> Config:
    extra = (
        f"concurrency = 4\nbatch_size = 50\n{mail}\n"
        f'[mail.smtp]\nhost = "127.0.0.1"\nport = {port}\nsecurity = "none"\n'
        f"max_per_connection = 10000\n"
    )
    tables = (
        f'\n[daemon]\nrunner = "{runner}"\ngrace_seconds = 10\n'
        f"\n[worker]\nconcurrency = 2\ndelivery_jobs = 2\nsweep_seconds = 5\n{worker}\n"
    )
    path = write_config(
        db_url=db_url,
        transport="smtp",
        mail_extra=extra,
        subscribers=readers(count),
        extra=tables,
        name=name,
        **({} if sources is None else {"sources": sources}),
    )
    return load_config(path, env=ENV)


async def prepare(
    config: Config, *, installation: str | None = None, plan: bool = True, ingest: bool = True
) -> int:
    """`paperpost db upgrade`, then the daemon's half of a tick without the defer: sync,
    ingest the sample listings and (``plan``) plan the period due at NOW in this process.
    The planned row count (0 without ``plan``)."""
    app = App(config, clock=lambda: NOW)
    try:
        await asyncio.to_thread(app.upgrade_database)
        await apply_schema_async(config)
        if installation is not None:
            await asyncio.to_thread(_set_installation, app, installation)
        await asyncio.to_thread(app.sync)
        if ingest:
            await app.ingest(now=NOW)
        if not plan:
            return 0
        report = await asyncio.to_thread(app.plan, now=NOW)
        return report.planned
    finally:
        app.close()


def _set_installation(app: App, installation: str) -> None:
    # Message-IDs carry the installation's id: give both databases the same one.
    from sqlalchemy import text

    with app.store.engine.begin() as conn:
        conn.execute(text("DELETE FROM meta WHERE key = 'installation_id'"))
        conn.execute(
            text("INSERT INTO meta (key, value) VALUES ('installation_id', :v)"),
            {"v": installation},
        )


async def defer(config: Config) -> int:
    """The daemon's defer after planning."""
    dispatcher = Dispatcher(config)
    app = App(config)
    await dispatcher.open()
    try:
        return await dispatcher.defer_deliveries(app)
    finally:
        await dispatcher.close()
        app.close()


async def tick(
    config: Config, *, block_size: int, stalled_seconds: float = STALLED_SECONDS
) -> tuple[PlanDispatch, int]:
    """The daemon's dispatch tick at NOW with workers: plan_block jobs of ``block_size``
    readers. Also how many times the tick's process fitted a matcher."""
    dispatcher = Dispatcher(config, block_size=block_size, stalled_seconds=stalled_seconds)
    app = App(config, clock=lambda: NOW)
    await dispatcher.open()
    try:
        return await dispatcher.defer_plan(app, now=NOW), app.fits
    finally:
        await dispatcher.close()
        app.close()


def start_worker(config: Config, *, log: Path | None = None) -> subprocess.Popen[bytes]:
    """A `paperpost worker` process; its log (INFO and up) goes to ``log`` when given (a
    pipe nobody reads would stall a chatty worker)."""
    with open(log or os.devnull, "ab") as stderr:
        return subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "-c", str(config.path), "worker"],
            env=ENV,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )


def fits_logged(log: Path) -> int:
    """How many times a worker logged fitting a tick's matcher (App.plan_block)."""
    return log.read_text(encoding="utf-8").count("matcher fitted for the tick")


def stop_worker(proc: subprocess.Popen[bytes], *, timeout: float = 60) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise


def wait_for(condition: Callable[[], bool], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)


def outbox_counts(config: Config) -> dict[str, int]:
    app = App(config)
    try:
        return app.outbox_counts()
    finally:
        app.close()


# Signed link tokens carry their issue time, the footer the sending day (the worker's
# clock, not the test's).
_TOKEN = re.compile(r"(https://digest\.paperpost\.example/[a-z-]+/)[^\s\"'<>&]+")
_SENT_ON = re.compile(r"(Sent by [^<\n]* on )\d{1,2} [A-Z][a-z]{2} \d{4}")


def normalised(data: bytes) -> str:
    """A message without what depends on the sending clock: the Date header, the signed
    links' tokens and the footer's sending day. Headers and decoded parts, in order."""
    message = email.message_from_bytes(data, policy=email.policy.default)
    lines = [f"{k}: {v}" for k, v in message.items() if k.lower() != "date"]
    for part in message.walk():
        if not part.is_multipart():
            lines.append(str(part.get_content()))
    return _SENT_ON.sub(r"\1DAY", _TOKEN.sub(r"\1TOKEN", "\n".join(lines)))
