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
stays terminal in the outbox. A row never waits without a job: the worker that planned
a block defers delivery right after writing its rows, and every worker's periodic sweep
defers again while rows are open (a worker or daemon killed in between loses nothing).

Planning is split too: the daemon (the clock) finds the readers due, computes the digest
of the matcher's inputs (``App.plan_tick``) and defers one ``plan_block`` job per
:data:`PLAN_BLOCK` readers; a worker fits the tick's matcher once per process, checked
against that digest (``App.plan_block``). A block whose worker died is retried by the
next tick (procrastinate's stalled-job check on the workers' heartbeats); readers of a
block that failed are still due without a row, so the next tick plans them again.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from procrastinate import App as JobApp
from procrastinate import BaseConnector, JobContext, PsycopgConnector, RetryStrategy
from procrastinate.exceptions import AlreadyEnqueued, ConnectorException, UniqueViolation
from procrastinate.jobs import Status
from procrastinate.types import JSONValue

from pipeline.app import App
from pipeline.config import Config
from pipeline.domain import Mailer
from pipeline.errors import PaperpostError

log = logging.getLogger("paperpost.runner")

DELIVER = "paperpost.deliver"
INGEST = "paperpost.ingest_source"
PLAN = "paperpost.plan_block"
SWEEP = "paperpost.sweep"

# Readers per plan_block job. Matching is vectorised per call, so a block must be large
# enough that its fixed costs (reading the window's papers and the readers' history,
# building the period's TF-IDF rows) stay small next to the matching, and small enough
# that a tick of 100,000 readers spreads over every worker (50 jobs) and a killed
# worker's retried block is short (bench/PLAN.md has the cost per reader); a block is
# ~4 outbox transactions of cycle/plan.py's 512 readers.
PLAN_BLOCK = 2_000
# A worker's heartbeat (procrastinate's, in its workers table) and how old it may grow
# before the daemon's tick takes the worker for dead and retries its plan_block jobs.
HEARTBEAT_SECONDS = 5.0
STALLED_SECONDS = 30.0

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

    @jobs.task(name=PLAN, queue=worker.queue, pass_context=True)
    async def plan_block(
        context: JobContext, now: str, subscriber_ids: list[int], fit: str
    ) -> dict[str, int]:
        """Plan one block of a tick (App.plan_block), then defer delivery of its rows.
        ``now`` is the tick's ISO-8601 instant, ``fit`` its matcher's input digest."""
        state = _state(context)
        report = await asyncio.to_thread(
            state.app.plan_block,
            now=datetime.fromisoformat(now),
            subscriber_ids=subscriber_ids,
            fit=fit,
        )
        deferred = await defer_deliveries(context.app, config, state.app)
        return {
            "due": report.due,
            "planned": report.planned,
            "skipped_empty": report.skipped_empty,
            "already_planned": report.already_planned,
            "delivery_jobs": deferred,
        }

    @jobs.task(name=INGEST, queue=worker.queue, pass_context=True)
    async def ingest_source(
        context: JobContext, name: str, now: str, run: int | None = None
    ) -> dict[str, Any]:
        """Fetch one source (App.ingest_source) in the ingest run ``run`` its deferrer
        started; ``now`` (ISO-8601) is the run's stamp, read after that start committed.
        A job without ``run`` (deferred by an older daemon) starts its own run."""
        outcome = await _state(context).app.ingest_source(
            name, now=datetime.fromisoformat(now) if run is not None else None, run=run
        )
        return {"ok": outcome.ok, "new": outcome.new, "error": outcome.error}

    @jobs.periodic(cron=sweep_cron(worker.sweep_seconds))
    @jobs.task(name=SWEEP, queue=worker.queue, pass_context=True)
    async def sweep(context: JobContext, timestamp: int) -> int:
        """Settle the jobs of dead workers (:func:`recover_stalled`), then defer delivery
        jobs while outbox rows are open (nothing waits without a job)."""
        await recover_stalled(context.app)
        return await defer_deliveries(context.app, config, _state(context).app)

    return jobs


@dataclass
class Recovered:
    """What one sweep did with the jobs of dead workers (:func:`recover_stalled`)."""

    retried: list[int] = field(default_factory=list)
    aborted: list[int] = field(default_factory=list)


async def recover_stalled(jobs: JobApp, *, seconds: float = STALLED_SECONDS) -> Recovered:
    """Settle the delivery, ingest and sweep jobs left ``doing`` by workers whose heartbeat
    is older than ``seconds`` (procrastinate's stalled jobs: ``get_stalled_jobs``), so no
    job row stays ``doing`` for ever.

    A delivery or ingest job is retried (back to ``todo``, its queueing lock with it),
    unless another job already waits under its queueing lock (a sweep or tick deferred
    one meanwhile): then it is finished as ``aborted``, the waiting job does its work. A
    sweep job is finished as ``aborted`` (the next sweep comes anyway). The outbox rows a
    dead delivery job had claimed are returned by the next delivery job's recovery, and
    a dead ingest job's run is closed by planning once its fence lapses (docs/ingest.md).
    ``plan_block`` jobs are the daemon's tick's to retry (:meth:`Dispatcher.defer_plan`).
    Two sweeps settling the same job is harmless: the loser's call finds it settled."""
    manager = jobs.job_manager
    done = Recovered()
    for task in (DELIVER, INGEST, SWEEP):
        for job in await manager.get_stalled_jobs(task_name=task, seconds_since_heartbeat=seconds):
            assert job.id is not None
            lock = job.queueing_lock
            waiting = task == SWEEP or (
                lock is not None
                and any(await manager.list_jobs_async(queueing_lock=lock, status="todo"))
            )
            try:
                if not waiting:
                    try:
                        await manager.retry_job(job)
                        done.retried.append(job.id)
                        log.warning("%s job %s of a dead worker: retried", task, job.id)
                        continue
                    except UniqueViolation:  # a job was deferred under its lock just now
                        pass
                await manager.finish_job_by_id_async(
                    job.id, status=Status.ABORTED, delete_job=False
                )
                done.aborted.append(job.id)
                log.warning(
                    "%s job %s of a dead worker: aborted (%s)",
                    task,
                    job.id,
                    "another job waits under its lock" if lock else "the next one runs anyway",
                )
            except ConnectorException as exc:  # settled by another sweep meanwhile
                log.info("%s job %s of a dead worker: left as it is (%s)", task, job.id, exc)
    return done


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


@dataclass(frozen=True)
class PlanDispatch:
    """What one tick deferred (:meth:`Dispatcher.defer_plan`)."""

    due: int  # readers due without a row
    in_flight: int  # of those, already in a waiting or running plan_block job
    blocks: int  # plan_block jobs deferred now
    retried: int  # plan_block jobs of dead workers put back in the queue
    fit: str


class Dispatcher:
    """The daemon's side: an open procrastinate app to defer jobs with."""

    def __init__(
        self,
        config: Config,
        *,
        connector: BaseConnector | None = None,
        block_size: int = PLAN_BLOCK,
        stalled_seconds: float = STALLED_SECONDS,
    ) -> None:
        self.config = config
        self.jobs = build_app(config, connector=connector)
        self.block_size = block_size
        self.stalled_seconds = stalled_seconds

    async def open(self) -> None:
        await self.jobs.open_async()

    async def close(self) -> None:
        await self.jobs.close_async()

    async def defer_deliveries(self, app: App) -> int:
        return await defer_deliveries(self.jobs, self.config, app)

    async def defer_plan(self, app: App, *, now: datetime) -> PlanDispatch:
        """The dispatch tick's planning: put the plan_block jobs of dead workers back in
        the queue, then defer one job per :attr:`block_size` readers due at ``now`` that
        no waiting or running job holds yet (a slow block is not planned twice)."""
        manager = self.jobs.job_manager
        stalled = list(
            await manager.get_stalled_jobs(
                task_name=PLAN, seconds_since_heartbeat=self.stalled_seconds
            )
        )
        for job in stalled:
            log.warning("plan_block job %s of a dead worker: retried", job.id)
            await manager.retry_job(job)
        held: set[int] = set()
        for status in ("todo", "doing"):
            for job in await manager.list_jobs_async(task=PLAN, status=status):
                block = job.task_kwargs.get("subscriber_ids")
                if isinstance(block, list):
                    held.update(i for i in block if isinstance(i, int))
        tick = await asyncio.to_thread(app.plan_tick, now=now)
        ids = [i for i in tick.subscriber_ids if i not in held]
        task = self.jobs.tasks[PLAN]
        size = self.block_size
        blocks = [ids[begin : begin + size] for begin in range(0, len(ids), size)]
        if blocks:
            arguments: list[dict[str, JSONValue]] = [
                {"now": tick.now.isoformat(), "subscriber_ids": list(b), "fit": tick.fit}
                for b in blocks
            ]
            await task.batch_defer_async(*arguments)
        return PlanDispatch(
            due=len(tick.subscriber_ids),
            in_flight=len(tick.subscriber_ids) - len(ids),
            blocks=len(blocks),
            retried=len(stalled),
            fit=tick.fit,
        )

    async def defer_ingest(self, app: App, names: list[str], *, wait: float | None = None) -> int:
        """One ``ingest_source`` job per source (a source whose job still waits is not
        deferred twice). With ``wait``, return once every source's job has finished, or
        after ``wait`` seconds (logged): the daemon's first tick waits, so that the first
        dispatch plans with the papers just fetched.

        Each job's ingest run is recorded as started here, before the job is deferred,
        and the job carries the run and its stamp (``App.start_ingest_run``): planning
        fences windows from that moment until the job finishes it, so papers the job
        commits late, under this clock's stamp, still reach every reader's next window."""
        task = self.jobs.tasks[INGEST]
        manager = self.jobs.job_manager
        deferred = 0
        ids: list[int] = []
        for name in names:
            lock = f"{INGEST}-{name}"
            run, stamp = await asyncio.to_thread(app.start_ingest_run)
            try:
                ids.append(
                    await task.configure(queueing_lock=lock).defer_async(
                        name=name, now=stamp.isoformat(), run=run
                    )
                )
            except AlreadyEnqueued:
                waiting = {"ok": True, "new": 0, "error": None, "note": "a job was waiting"}
                await asyncio.to_thread(app.finish_ingest_run, run, {name: waiting})
                ids += [j.id for j in await manager.list_jobs_async(queueing_lock=lock) if j.id]
                continue
            deferred += 1
        if wait is not None:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + wait
            while ids:
                unfinished = []
                for job_id in ids:
                    for job in await manager.list_jobs_async(id=job_id):
                        if job.status in ("todo", "doing"):
                            unfinished.append(job_id)
                ids = unfinished
                if ids and loop.time() >= deadline:
                    log.warning(
                        "%d ingest jobs still unfinished after %.0f s: dispatching anyway",
                        len(ids),
                        wait,
                    )
                    break
                if ids:
                    await asyncio.sleep(0.25)
        return deferred


__all__ = [
    "DELIVER",
    "HEARTBEAT_SECONDS",
    "INGEST",
    "PLAN",
    "PLAN_BLOCK",
    "STALLED_SECONDS",
    "SWEEP",
    "DeliveryAborted",
    "Dispatcher",
    "PlanDispatch",
    "Recovered",
    "WorkerState",
    "build_app",
    "conninfo",
    "defer_deliveries",
    "job_holder",
    "recover_stalled",
    "sweep_cron",
]
