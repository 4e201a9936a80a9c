"""When each source is due for fetching (pure; the daemon's ingest tick asks this)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta


def sources_due(
    intervals: Mapping[str, timedelta],
    last_attempts: Mapping[str, datetime | None],
    *,
    tick: timedelta,
    now: datetime,
) -> list[str]:
    """Names of sources whose own interval has passed since their last attempt, in order.

    Driven by the database's record of attempts, so a restart does not re-fetch
    every feed at once and a source never fetched is due at once. Half a tick
    of slack keeps a source whose interval equals the tick from slipping to
    every other tick because of scheduling jitter.
    """
    due = []
    for name, interval in intervals.items():
        last = last_attempts.get(name)
        if last is None or now - last + tick / 2 >= interval:
            due.append(name)
    return due
