"""The soak's own pieces that need no processes: the message check (invariant 6), the
profiles' DST crossings, the step instants and the fault schedule's coverage."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from bench.soak import (
    FAULT_KINDS,
    PROFILES,
    Listings,
    Received,
    _check_message,
    _papers_in,
    fault_schedule,
    population,
    step_instants,
)

MESSAGE = (
    b"From: a@paperpost.example\r\nTo: b@soak.example\r\nSubject: digest\r\n"
    b"Message-ID: <1@paperpost.example>\r\nMIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n\r\n"
    b"1. A paper\r\n    abs: https://arxiv.org/abs/2501.00001v2\r\n"
)


def _received(data: bytes) -> Received:
    return Received(0.0, "", ("b@soak.example",), data, "<1@paperpost.example>")


def test_a_clean_message_passes_and_its_papers_are_found() -> None:
    assert _check_message(_received(MESSAGE)) == []
    assert _papers_in(MESSAGE) == {"2501.00001"}  # the version is dropped


def test_a_long_header_line_and_a_defect_are_flagged() -> None:
    long_line = MESSAGE.replace(b"Subject: digest", b"Subject: " + b"x" * 1000)
    assert [v.invariant for v in _check_message(_received(long_line))] == [6]
    broken = MESSAGE.replace(
        b"Content-Type: text/plain; charset=utf-8", b'Content-Type: multipart/mixed; boundary="b"'
    )
    assert any(v.invariant == 6 for v in _check_message(_received(broken)))


def _crosses(zone: str, start: datetime, days: int) -> bool:
    tz = ZoneInfo(zone)
    end = start + timedelta(days=days)
    return start.astimezone(tz).utcoffset() != end.astimezone(tz).utcoffset()


def test_the_profiles_cross_dst_changes() -> None:
    short, long = PROFILES["short"], PROFILES["long"]
    assert _crosses("Europe/London", short.start, short.days)
    for zone in ("Europe/London", "America/New_York", "Australia/Sydney"):
        assert _crosses(zone, long.start, long.days), zone


def test_steps_include_every_due_instant_once_and_are_capped() -> None:
    profile = PROFILES["short"]
    readers = population(profile, 1, Listings(profile, 1))
    end = profile.start + timedelta(days=profile.days)
    steps = step_instants(readers, profile.start, end)
    assert steps == sorted(set(steps))
    assert all(
        b - a <= timedelta(hours=2)
        for a, b in zip([profile.start, *steps[:-1]], steps, strict=True)
    )
    # 01:30 in London on 25 October 2026 happens twice; it is due once, at the first (BST).
    # (Seed 1's population has a daily 01:30 reader in London.)
    assert any(
        (r.timezone, r.frequency, r.send_at) == ("Europe/London", "daily", "01:30") for r in readers
    )
    assert datetime(2026, 10, 25, 0, 30, tzinfo=UTC) in steps
    kinds = {r.kind for r in readers}
    assert kinds == {"query", "categories", "authors", "about", "liked", "trending"}
    assert len({r.timezone for r in readers}) == 8


def test_the_fault_schedule_has_every_kind_and_replays() -> None:
    steps = [datetime(2026, 10, 23, tzinfo=UTC) + timedelta(hours=h) for h in range(72)]
    first = fault_schedule(steps, list(FAULT_KINDS), 7, 3)
    assert {f.kind for f in first} == set(FAULT_KINDS)
    assert [(f.at, f.kind) for f in first] == [
        (f.at, f.kind) for f in fault_schedule(steps, list(FAULT_KINDS), 7, 3)
    ]
    assert max(f.at for f in first) <= steps[int(len(steps) * 0.85)].isoformat()
