"""Wording the reader sees: schedules and periods in the digest's footer and subject, and
the feedback pages naming the paper (by title, never a hash) and the list."""

from __future__ import annotations

from datetime import time

import pytest

from pipeline.cycle.wording import describe_schedule, zoned_label
from pipeline.domain import Period, Schedule
from pipeline.web import pages
from tests.factories import MONDAY_NOON as NOW

SCHEDULES = [
    ("daily", "daily", "07:30", "Europe/London", "daily at 07:30 Europe/London"),
    ("weekdays", "weekdays", "09:00", "Europe/London", "weekdays at 09:00 Europe/London"),
    (
        "weekly",
        "weekly:monday",
        "08:15",
        "America/Los_Angeles",
        "weekly on Mondays at 08:15 America/Los_Angeles",
    ),
    (
        "cron-weekday-mornings",
        "cron:0 8 * * 1-5",
        "07:30",  # ignored by a cron schedule, and not shown
        "Europe/London",
        "on a custom schedule (cron 0 8 * * 1-5); the next digests come Tue 24 Nov 08:00, "
        "Wed 25 Nov 08:00 and Thu 26 Nov 08:00 Europe/London",
    ),
    (
        "cron-twice-a-day-in-auckland",
        "0 7,19 * * *",
        "09:00",
        "Pacific/Auckland",  # 12:00 UTC is 01:00 on Tuesday there
        "on a custom schedule (cron 0 7,19 * * *); the next digests come Tue 24 Nov 07:00, "
        "Tue 24 Nov 19:00 and Wed 25 Nov 07:00 Pacific/Auckland",
    ),
]


@pytest.mark.parametrize(
    ("frequency", "send_at", "zone", "expected"),
    [s[1:] for s in SCHEDULES],
    ids=[s[0] for s in SCHEDULES],
)
def test_schedules_are_described_for_humans(
    frequency: str, send_at: str, zone: str, expected: str
) -> None:
    schedule = Schedule(frequency, time.fromisoformat(send_at), zone)
    described = describe_schedule(schedule, now=NOW)
    assert described == expected


def test_a_period_with_a_time_of_day_names_the_zone() -> None:
    several = Schedule("cron:0 7,19 * * *", time(9, 0), "Asia/Kolkata")
    label = zoned_label(several, Period("2026-11-23T19:00", NOW))
    assert label == "Monday 23 November 2026, 19:00 Asia/Kolkata"
    daily = Schedule("daily", time(9, 0), "Asia/Kolkata")
    assert zoned_label(daily, Period("2026-11-23", NOW)) == "Monday 23 November 2026"


@pytest.mark.parametrize(
    ("paper", "title", "named"),
    [
        ("sha:e711222a", "Attention <is> all you need", "Attention &lt;is&gt; all you need"),
        ("sha:e711222a", None, "this paper"),
        ("url:https://ok.example/p", None, "this paper"),
        ("doi:10.1000/xyz", None, "10.1000/xyz"),
        ("2305.18290", None, "2305.18290"),
    ],
    ids=["title", "hash", "link-id", "doi", "arxiv-id"],
)
def test_feedback_pages_name_the_paper_never_a_hash(
    paper: str, title: str | None, named: str
) -> None:
    asked = pages.confirm_feedback("less", paper, title=title, list_name="Lab & friends")
    done = pages.feedback_recorded("less", paper, title=title, list_name="Lab & friends")
    assert f"<h1>Fewer papers like {named}?</h1>" in asked
    assert f"<strong>{named}</strong> in your next Lab &amp; friends digests?" in asked
    assert f"next Lab &amp; friends digests will show fewer papers like <strong>{named}" in done
    assert "sha:" not in asked + done and "url:" not in asked + done
