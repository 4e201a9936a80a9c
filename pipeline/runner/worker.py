"""``paperpost worker``: one process, one event loop, one SMTP pool, running Paperpost's
procrastinate jobs with the project's settings.

Several cores on one machine, or several machines, mean several workers: they share
nothing but PostgreSQL. A worker's jobs run ``[worker] concurrency`` at a time on its one
loop; each delivery job is a sender with ``[mail] concurrency`` messages in flight
through the worker's one mailer.

SIGTERM / SIGINT: claim nothing more, let the messages in hand finish and be recorded for
up to ``[daemon] grace_seconds``, then cancel what is left (its ``claimed`` rows go back
to the queue, untouched) and exit 0. A second signal during the drain is logged and
ignored. A worker killed outright (``kill -9``) leaves rows ``claimed`` under
``host:pid:job-N``: the next delivery job on the same host returns them at once (the pid
is gone), one on another host after ``[mail] stale_claim_minutes``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Sequence

from procrastinate import BaseConnector

from pipeline.app import App, configured_clock
from pipeline.config import Config
from pipeline.runner.jobs import HEARTBEAT_SECONDS, STALLED_SECONDS, WorkerState, build_app

log = logging.getLogger("paperpost.runner")


async def work(
    config: Config,
    *,
    concurrency: int | None = None,
    queues: Sequence[str] | None = None,
    connector: BaseConnector | None = None,
    wait: bool = True,
) -> int:
    """Run jobs until stopped by a signal (or, with ``wait=False``, until none is left)."""
    app = App(config, clock=configured_clock(config))  # [testing] clock_file
    mailer = app.mailer()
    state = WorkerState(app=app, mailer=mailer)
    jobs = build_app(config, connector=connector)
    worker = config.file.worker
    loop = asyncio.get_running_loop()
    running: asyncio.Task[None] | None = None

    def stop(name: str) -> None:
        if state.stopping.is_set():
            log.warning("%s received while stopping; still draining", name)
            return
        log.warning(
            "%s received: finishing the messages in hand for up to %.0f s",
            name,
            config.file.daemon.grace_seconds,
        )
        state.stopping.set()
        if running is not None:
            running.cancel()  # procrastinate's graceful stop: wait for running jobs

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop, sig.name)
    try:
        async with jobs.open_async():
            running = asyncio.create_task(
                jobs.run_worker_async(
                    queues=list(queues or [worker.queue]),
                    concurrency=concurrency or worker.concurrency,
                    name=app.holder,
                    wait=wait,
                    additional_context={"paperpost": state},
                    install_signal_handlers=False,
                    shutdown_graceful_timeout=config.file.daemon.grace_seconds,
                    delete_jobs="successful",
                    # The daemon's tick retries plan_block jobs of a worker whose
                    # heartbeat is older than STALLED_SECONDS (jobs.Dispatcher.defer_plan).
                    update_heartbeat_interval=HEARTBEAT_SECONDS,
                    stalled_worker_timeout=STALLED_SECONDS,
                )
            )
            log.warning(
                "worker %s started on queue %s, %d jobs at a time",
                app.holder,
                ", ".join(queues or [worker.queue]),
                concurrency or worker.concurrency,
            )
            with contextlib.suppress(asyncio.CancelledError):
                await running
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await mailer.aclose()
        await asyncio.to_thread(app.close)
    log.warning("worker %s stopped", app.holder)
    return 0


def run_worker(
    config: Config, *, concurrency: int | None = None, queues: Sequence[str] | None = None
) -> int:
    """The process entry point; its exit status."""
    return asyncio.run(work(config, concurrency=concurrency, queues=queues))


__all__ = ["run_worker", "work"]
