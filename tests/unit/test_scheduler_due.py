"""Which sources the ingest tick fetches: each at its own interval, from the database's record."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from pipeline.schedule.due import sources_due
from tests.factories import SUNDAY_NOON as NOW

TICK = timedelta(minutes=15)
H = timedelta(hours=1)


@pytest.mark.parametrize(
    ("intervals", "last", "due"),
    [
        ({"a": H}, {}, ["a"]),
        ({"a": H}, {"a": None}, ["a"]),
        ({"a": H}, {"a": NOW - H}, ["a"]),
        ({"a": H}, {"a": NOW - timedelta(minutes=53)}, ["a"]),  # within half a tick: jitter
        ({"a": H}, {"a": NOW - timedelta(minutes=50)}, []),
        ({"a": TICK}, {"a": NOW - timedelta(minutes=14, seconds=59)}, ["a"]),
        ({"a": H, "b": 6 * H, "c": TICK}, {"a": NOW - 2 * H, "b": NOW - 2 * H, "c": NOW}, ["a"]),
        ({"a": H, "b": 6 * H}, {"a": NOW - 3 * 24 * H, "b": NOW - 3 * 24 * H}, ["a", "b"]),
    ],
    ids=["never-seen", "never-attempted", "exactly-due", "jitter-slack", "not-yet",
         "tick-sized-interval", "per-source-overrides", "after-an-outage-once-each"],
)  # fmt: skip
def test_sources_due(
    intervals: dict[str, timedelta], last: dict[str, datetime | None], due: list[str]
) -> None:
    assert sources_due(intervals, last, tick=TICK, now=NOW) == due
