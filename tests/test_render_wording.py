"""Wording the reader sees: schedules and periods in the digest's footer and subject, and
the feedback pages naming the paper and the list."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, time

import httpx
import pytest

from pipeline.cycle.wording import describe_schedule, zoned_label
from pipeline.domain import Period, Schedule
from pipeline.web.app import create_app
from pipeline.web.tokens import TokenSigner
from tests.web_fakes import FakeBackend, FakeClock

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)  # a Monday

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


# -- the feedback pages name the paper by its title, and the list ---------------------------
@dataclass
class TitledBackend(FakeBackend):
    titles: dict[str, str] = field(default_factory=dict)

    def paper_title(self, paper_id: str) -> str | None:
        return self.titles.get(paper_id)


HASHED = "sha:e711222a9d3c4b5a"


@pytest.mark.parametrize(
    ("paper", "titles", "named"),
    [
        (HASHED, {HASHED: "Attention <is> all you need"}, "Attention &lt;is&gt; all you need"),
        (HASHED, {}, "this paper"),  # never the content hash
        ("2305.18290", {}, "2305.18290"),
    ],
    ids=["title", "unknown-hash", "unknown-arxiv-id"],
)
async def test_feedback_pages_name_the_paper_and_the_list(
    paper: str, titles: dict[str, str], named: str
) -> None:
    clock = FakeClock()
    backend = TitledBackend(active={"ada@lab.example"}, titles=titles)
    signer = TokenSigner(["current-signing-key-0123456789"])
    app = create_app(backend, signer, admin_token=None, clock=clock, list_name="Lab & friends")
    token = signer.sign(subscriber="ada@lab.example", action="more", paper=paper, now=clock())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://d.example") as client:
        asked = await client.get(f"/feedback/{token}")
        done = await client.post(f"/feedback/{token}")
    assert f"<h1>More papers like {named}?</h1>" in asked.text
    assert f"<strong>{named}</strong> in your next Lab &amp; friends digests?" in asked.text
    assert f"next Lab &amp; friends digests will show more papers like <strong>{named}" in (
        done.text
    )
    assert "sha:" not in asked.text + done.text
    assert backend.feedback == {("ada@lab.example", paper): "more"}
