"""procrastinate's tables, functions and triggers beside Paperpost's, in the same database
(and the same ``search_path``): ``paperpost db upgrade`` applies them when
``daemon.runner = "procrastinate"``.

The schema is applied once, on a database that has none. Upgrading procrastinate itself
later means applying its own migration files in order (``procrastinate schema
--migrations`` prints their directory); docs/scaling.md says when that is safe with
workers running.
"""

from __future__ import annotations

import asyncio

from procrastinate import BaseConnector

from pipeline.config import Config
from pipeline.runner.jobs import build_app


async def apply_schema_async(config: Config, *, connector: BaseConnector | None = None) -> bool:
    """Apply procrastinate's schema unless it is there; whether it was applied now."""
    jobs = build_app(config, connector=connector)
    async with jobs.open_async():
        found = await jobs.connector.execute_query_one_async(
            "SELECT to_regclass('procrastinate_jobs') IS NOT NULL AS present"
        )
        if found["present"]:
            return False
        await jobs.schema_manager.apply_schema_async()
        return True


def apply_schema(config: Config) -> bool:
    """:func:`apply_schema_async` for the CLI (no event loop running)."""
    return asyncio.run(apply_schema_async(config))


__all__ = ["apply_schema", "apply_schema_async"]
