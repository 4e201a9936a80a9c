"""The procrastinate app, its tasks, and deferring them.

Tasks are built by :func:`build_app` from the configuration (their queue, the sweep's
period), so the daemon that defers and the workers that run them register the same names.
A task's arguments are plain JSON; what it needs besides (the worker's :class:`App`, its
SMTP pool, the stop flag) comes from the worker through procrastinate's
``additional_context`` as a :class:`WorkerState`.

Failure modes map to the outbox, not to procrastinate's retries: a 4xx reply defers the
digest with the outbox's own backoff and the job succeeds; an authentication, connection
or TLS failure gives the batch back (the rows stay ``pending``) and the job raises
:class:`DeliveryAborted`, which procrastinate retries after a pause; an ambiguous delivery
stays terminal in the outbox. A row never waits without a job: the daemon defers after
planning, and every worker's periodic sweep defers again while rows are open (a daemon
killed between the two loses nothing).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from procrastinate import App as JobApp
from procrastinate import BaseConnector, JobContext, PsycopgConnector, RetryStrategy
from procrastinate.exceptions import AlreadyEnqueued

from pipeline.app import App
from pipeline.config import Config
from pipeline.domain import Mailer
from pipeline.errors import PaperpostError

log = logging.getLogger("paperpost.runner")

DELIVER = "paperpost.deliver"
INGEST = "paperpost.ingest_source"
SWEEP = "paperpost.sweep"

# Rows in these states still need a sender (a dead worker's ``claimed`` rows included:
# the next job's recovery returns them).
OPEN = ("pending", "deferred", "claimed", "sending")


class DeliveryAborted(PaperpostError):
    """The batch was given back (the relay refused our login, TLS failed, the connection
    was refused): procrastinate retries the job after a pause."""


@dataclass
class WorkerState:
    """What a worker's tasks share: one App (one store connection pool), one mailer (one
    SMTP pool), and the stop flag SIGTERM sets (finish the messages in hand, claim none)."""

    app: App
    mailer: Mailer
    stopping: asyncio.Event = field(default_factory=asyncio.Event)


def conninfo(database_url: str) -> str:
    """libpq's URI for a ``postgresql+psycopg://`` SQLAlchemy URL (query options kept)."""
    scheme, sep, rest = database_url.partition("://")
    if not sep or not scheme.startswith("postgresql"):
        raise PaperpostError(
            f"the procrastinate runner needs a PostgreSQL database.url, found {scheme!r}"
        )
    return f"postgresql://{rest}"


def job_holder(base: str, context: JobContext) -> str:
    """The claim holder of one job run: ``host:pid:job-ID.ATTEMPT``. A re-run of the job
    (procrastinate's retry, or another job for the same rows) cannot pass for it, and
    dead-process recovery still reads the pid."""
    job = context.job
    return f"{base}:job-{job.id}.{job.attempts}"


def _state(context: JobContext) -> WorkerState:
    state = context.additional_context.get("paperpost")
    if not isinstance(state, WorkerState):
        raise PaperpostError("a Paperpost task ran outside `paperpost worker` (no worker state)")
    return state


def sweep_cron(seconds: int) -> str:
    """procrastinate's cron for "every ``seconds``" (seconds are the 6th column; a minute or
    more is rounded down to whole minutes)."""
    if seconds < 60:
        return f"* * * * * */{seconds}"
    return f"*/{min(seconds // 60, 59)} * * * *"


def build_app(config: Config, *, connector: BaseConnector | None = None) -> JobApp:
    """The procrastinate app over the configured database (or ``connector``: tests use
    procrastinate's in-memory one), with Paperpost's tasks registered."""
    worker = config.file.worker
    jobs = JobApp(connector=connector or PsycopgConnector(conninfo=conninfo(config.database_url)))

    @jobs.task(
        name=DELIVER,
        queue=worker.queue,
        pass_context=True,
        retry=RetryStrategy(
            max_attempts=20, wait=30, exponential_wait=2, retry_exceptions={DeliveryAborted}
        ),
    )
    async def deliver(context: JobContext) -> dict[str, int]:
        """Send what the outbox holds that is due (App.deliver_batch) as this job."""
        state = _state(context)
        report = await state.app.deliver_batch(
            holder=job_holder(state.app.holder, context),
            mailer=state.mailer,
            stopping=state.stopping,
        )
        if report.aborted is not None:
            raise DeliveryAborted(report.aborted)
        return {
            "sent": report.sent,
            "deferred": report.deferred,
            "failed": report.failed,
            "ambiguous": report.ambiguous,
            "lost_claims": report.lost_claims,
        }

    @jobs.task(name=INGEST, queue=worker.queue, pass_context=True)
    async def ingest_source(context: JobContext, name: str, now: str) -> dict[str, Any]:
        """Fetch one source (App.ingest_source); ``now`` is an ISO-8601 instant."""
        outcome = await _state(context).app.ingest_source(name, now=datetime.fromisoformat(now))
        return {"ok": outcome.ok, "new": outcome.new, "error": outcome.error}

    @jobs.periodic(cron=sweep_cron(worker.sweep_seconds))
    @jobs.task(name=SWEEP, queue=worker.queue, pass_context=True)
    async def sweep(context: JobContext, timestamp: int) -> int:
        """Defer delivery jobs while outbox rows are open (nothing waits without a job)."""
        return await defer_deliveries(context.app, config, _state(context).app)

    return jobs


async def defer_deliveries(jobs: JobApp, config: Config, app: App) -> int:
    """Keep ``[worker] delivery_jobs`` delivery jobs queued while the outbox has open rows;
    how many were deferred now. Each slot has its own queueing lock, so a slot whose job is
    still waiting is skipped: ticks and sweeps never pile jobs up."""
    counts = await asyncio.to_thread(app.outbox_counts)
    if not any(counts.get(state, 0) for state in OPEN):
        return 0
    task = jobs.tasks[DELIVER]
    deferred = 0
    for slot in range(config.file.worker.delivery_jobs):
        try:
            await task.configure(queueing_lock=f"{DELIVER}-{slot}").defer_async()
        except AlreadyEnqueued:
            continue
        deferred += 1
    return deferred


class Dispatcher:
    """The daemon's side: an open procrastinate app to defer jobs with."""

    def __init__(self, config: Config, *, connector: BaseConnector | None = None) -> None:
        self.config = config
        self.jobs = build_app(config, connector=connector)

    async def open(self) -> None:
        await self.jobs.open_async()

    async def close(self) -> None:
        await self.jobs.close_async()

    async def defer_deliveries(self, app: App) -> int:
        return await defer_deliveries(self.jobs, self.config, app)

    async def defer_ingest(self, names: list[str], *, now: datetime) -> int:
        """One ``ingest_source`` job per source (a source whose job still waits is skipped)."""
        task = self.jobs.tasks[INGEST]
        deferred = 0
        for name in names:
            try:
                await task.configure(queueing_lock=f"{INGEST}-{name}").defer_async(
                    name=name, now=now.isoformat()
                )
            except AlreadyEnqueued:
                continue
            deferred += 1
        return deferred


__all__ = [
    "DELIVER",
    "INGEST",
    "SWEEP",
    "DeliveryAborted",
    "Dispatcher",
    "WorkerState",
    "build_app",
    "conninfo",
    "defer_deliveries",
    "job_holder",
    "sweep_cron",
]
