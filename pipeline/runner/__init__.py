"""The procrastinate runner: Paperpost's ingest, planning and delivery as jobs in
PostgreSQL, run by ``paperpost worker`` processes on any number of machines
(docs/scaling.md).

The daemon stays the clock: it holds the scheduler lease, defers one ingest job per due
source, decides which readers are due and defers their ``plan_block`` jobs with the
digest of the tick's matcher inputs (each worker fits that matcher once per tick and
checks the digest), and keeps delivery jobs queued. Workers claim rows with the outbox's
own ``FOR UPDATE SKIP LOCKED`` claim, so a job that runs twice, or a row that two jobs
reach, is harmless: the claim decides (and for planning, the outbox's unique (reader,
period)). Every task is a thin wrapper over an application-layer use case
(``pipeline.app.App``); the embedded runner calls the same use cases in the daemon's
process.

- ``jobs``: the procrastinate app factory, the tasks, deferring and the sweep;
- ``worker``: the ``paperpost worker`` process (one event loop, one SMTP pool);
- ``schema``: procrastinate's tables beside Paperpost's (``paperpost db upgrade``).
"""

from __future__ import annotations

from pipeline.runner.jobs import Dispatcher, build_app, conninfo, defer_deliveries
from pipeline.runner.schema import apply_schema
from pipeline.runner.worker import run_worker

__all__ = ["Dispatcher", "apply_schema", "build_app", "conninfo", "defer_deliveries", "run_worker"]
