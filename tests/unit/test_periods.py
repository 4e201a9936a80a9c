"""Schedule maths with a controllable clock: time zones, DST, weekly, cron, outages."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.domain import Period, Schedule
from pipeline.schedule.cron import parse_cron
from pipeline.schedule.periods import (
    due_periods,
    latest_due_period,
    next_due_period,
    parse_frequency,
    period_label,
)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def sched(frequency: str, send_at: str, tz: str) -> Schedule:
    hh, mm = send_at.split(":")
    return Schedule(frequency=frequency, send_at=time(int(hh), int(mm)), timezone=tz)


# ---------------------------------------------------------------- parse_frequency


@pytest.mark.parametrize(
    ("text", "normal"),
    [
        ("daily", "daily"),
        ("  Daily ", "daily"),
        ("weekdays", "weekdays"),
        ("weekly:mon", "weekly:mon"),
        ("weekly:SUN", "weekly:sun"),
        ("weekly:friday", "weekly:fri"),
        ("cron:0 8 * * 1-5", "cron:0 8 * * 1-5"),
        ("0  8 * *   MON-FRI", "cron:0 8 * * mon-fri"),
        ("cron: */15 6-9 1,15 jan-mar 0", "cron:*/15 6-9 1,15 jan-mar 0"),
    ],
    ids=[
        "daily",
        "daily-case-space",
        "weekdays",
        "weekly",
        "weekly-upper",
        "weekly-fullname",
        "cron-prefix",
        "bare-cron",
        "cron-lists-steps-names",
    ],
)
def test_parse_frequency_normalises(text: str, normal: str) -> None:
    assert parse_frequency(text) == normal


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("hourly", "is not understood"),
        ("weekly", "is not understood"),
        ("weekly:funday", "unknown weekday 'funday'"),
        ("cron:0 8 * *", "expected 5 fields"),
        ("cron:60 8 * * *", "minute 60 is out of range 0-59"),
        ("0 24 * * *", "hour 24 is out of range 0-23"),
        ("0 8 0 * *", "day of month 0 is out of range 1-31"),
        ("0 8 * 13 *", "month 13 is out of range 1-12"),
        ("0 8 * * 8", "day of week 8 is out of range 0-7"),
        ("0 8 * * xyz", "day of week field has 'xyz'"),
        ("*/0 8 * * *", "minute step '0' must be a positive number"),
        ("0 9-5 * * *", "hour range '9-5' runs backwards"),
        ("0 8 30 2 *", "never fires"),
        ("0 8 1,,2 * *", "empty item"),
        ("@daily", "is not understood"),
    ],
    ids=[
        "unknown-word",
        "weekly-without-day",
        "bad-weekday",
        "four-fields",
        "minute-range",
        "hour-range",
        "dom-zero",
        "month-13",
        "dow-8",
        "dow-name",
        "zero-step",
        "backwards",
        "30-feb",
        "empty-item",
        "macro",
    ],
)
def test_parse_frequency_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("*", r"\*")):
        parse_frequency(text)


# ---------------------------------------------------------------- cron semantics


@pytest.mark.parametrize(
    ("expr", "day", "fires"),
    [
        ("0 8 * * 1-5", date(2026, 11, 23), True),  # Monday
        ("0 8 * * 1-5", date(2026, 11, 22), False),  # Sunday
        ("0 8 * * 7", date(2026, 11, 22), True),  # 7 is Sunday too
        ("0 8 * * sun", date(2026, 11, 22), True),
        ("0 8 13 * fri", date(2026, 11, 13), True),  # both restricted: OR
        ("0 8 13 * fri", date(2026, 11, 20), True),  # a Friday, not the 13th
        ("0 8 13 * fri", date(2026, 11, 14), False),
        ("0 8 */2 * mon", date(2026, 11, 16), False),  # dom starts with '*': AND
        ("0 8 */2 * mon", date(2026, 11, 9), True),  # odd day and Monday
        ("0 8 1 jan-mar *", date(2026, 2, 1), True),
        ("0 8 1 jan-mar *", date(2026, 4, 1), False),
        ("0 8 29 2 *", date(2028, 2, 29), True),
        ("0 8 5/10 * *", date(2026, 11, 25), True),  # 5, 15, 25
        ("0 8 5/10 * *", date(2026, 11, 20), False),
    ],
    ids=[
        "weekday-mon",
        "weekday-sun",
        "dow-7",
        "dow-name",
        "or-13th",
        "or-friday",
        "or-neither",
        "and-star-step-even",
        "and-star-step-odd",
        "month-range-in",
        "month-range-out",
        "leap-day",
        "start-step-in",
        "start-step-out",
    ],
)
def test_cron_matches_date(expr: str, day: date, fires: bool) -> None:
    assert parse_cron(expr).matches_date(day) is fires


def test_cron_times_are_ordered_products_of_hours_and_minutes() -> None:
    cron = parse_cron("45,15 17,8 * * *")
    assert cron.times() == (time(8, 15), time(8, 45), time(17, 15), time(17, 45))
    assert not cron.once_a_day
    assert parse_cron("0 8 * * *").once_a_day


# ---------------------------------------------------------------- latest / next

LATEST_CASES = [
    # (id, schedule, now, expected key, expected due UTC)
    (
        "tokyo-just-due",
        sched("daily", "08:00", "Asia/Tokyo"),
        utc(2026, 11, 22, 23, 0),
        "2026-11-23",
        utc(2026, 11, 22, 23, 0),
    ),
    (
        "tokyo-one-second-early",
        sched("daily", "08:00", "Asia/Tokyo"),
        utc(2026, 11, 22, 22, 59, 59),
        "2026-11-22",
        utc(2026, 11, 21, 23, 0),
    ),
    (
        "kolkata-half-hour-offset",
        sched("daily", "08:00", "Asia/Kolkata"),
        utc(2026, 11, 23, 2, 30),
        "2026-11-23",
        utc(2026, 11, 23, 2, 30),
    ),
    (
        "kolkata-before",
        sched("daily", "08:00", "Asia/Kolkata"),
        utc(2026, 11, 23, 2, 29),
        "2026-11-22",
        utc(2026, 11, 22, 2, 30),
    ),
    (
        "auckland-nzdt",
        sched("daily", "07:00", "Pacific/Auckland"),
        utc(2026, 11, 22, 18, 0),
        "2026-11-23",
        utc(2026, 11, 22, 18, 0),
    ),
    (
        "auckland-spring-gap",
        sched("daily", "02:30", "Pacific/Auckland"),
        utc(2026, 9, 26, 15, 0),
        "2026-09-27",
        utc(2026, 9, 26, 14, 30),
    ),  # 02:30 does not exist: 03:30 NZDT
    (
        "auckland-autumn-fold",
        sched("daily", "02:30", "Pacific/Auckland"),
        utc(2026, 4, 4, 14, 0),
        "2026-04-05",
        utc(2026, 4, 4, 13, 30),
    ),  # first 02:30 (NZDT, +13)
    (
        "new-york-spring-gap",
        sched("daily", "02:30", "America/New_York"),
        utc(2026, 3, 8, 7, 30),
        "2026-03-08",
        utc(2026, 3, 8, 7, 30),
    ),  # 03:30 EDT
    (
        "new-york-spring-gap-before",
        sched("daily", "02:30", "America/New_York"),
        utc(2026, 3, 8, 7, 29),
        "2026-03-07",
        utc(2026, 3, 7, 7, 30),
    ),
    (
        "new-york-autumn-first",
        sched("daily", "01:30", "America/New_York"),
        utc(2026, 11, 1, 5, 30),
        "2026-11-01",
        utc(2026, 11, 1, 5, 30),
    ),  # 01:30 EDT
    (
        "new-york-autumn-second-hour",
        sched("daily", "01:30", "America/New_York"),
        utc(2026, 11, 1, 6, 45),
        "2026-11-01",
        utc(2026, 11, 1, 5, 30),
    ),  # 01:45 EST: no resend
    (
        "new-york-after-spring",
        sched("daily", "08:00", "America/New_York"),
        utc(2026, 3, 9, 12, 0),
        "2026-03-09",
        utc(2026, 3, 9, 12, 0),
    ),
    (
        "weekdays-saturday",
        sched("weekdays", "08:00", "Europe/London"),
        utc(2026, 11, 28, 12, 0),
        "2026-11-27",
        utc(2026, 11, 27, 8, 0),
    ),
    (
        "weekdays-monday-early",
        sched("weekdays", "08:00", "Europe/London"),
        utc(2026, 11, 30, 7, 0),
        "2026-11-27",
        utc(2026, 11, 27, 8, 0),
    ),
    (
        "weekly-mon-kolkata",
        sched("weekly:mon", "08:00", "Asia/Kolkata"),
        utc(2026, 11, 25, 0, 0),
        "2026-W48",
        utc(2026, 11, 23, 2, 30),
    ),
    (
        "weekly-iso-week-53",
        sched("weekly:thu", "09:00", "UTC"),
        utc(2027, 1, 2, 0, 0),
        "2026-W53",
        utc(2026, 12, 31, 9, 0),
    ),
    (
        "weekly-new-year",
        sched("weekly:mon", "09:00", "UTC"),
        utc(2027, 1, 4, 9, 0),
        "2027-W01",
        utc(2027, 1, 4, 9, 0),
    ),
    (
        "weekly-tokyo-date-ahead",
        sched("weekly:mon", "06:00", "Asia/Tokyo"),
        utc(2026, 11, 22, 21, 0),
        "2026-W48",
        utc(2026, 11, 22, 21, 0),
    ),  # Sunday in UTC, Monday in Tokyo
    (
        "cron-weekdays-ny",
        sched("cron:0 8 * * 1-5", "00:00", "America/New_York"),
        utc(2026, 11, 22, 12, 0),
        "2026-11-20",
        utc(2026, 11, 20, 13, 0),
    ),
    (
        "cron-monthly",
        sched("30 9 1 * *", "00:00", "Asia/Tokyo"),
        utc(2026, 11, 22, 0, 0),
        "2026-11-01",
        utc(2026, 11, 1, 0, 30),
    ),
    (
        "cron-twice-a-day",
        sched("cron:0 8,17 * * *", "00:00", "Europe/Berlin"),
        utc(2026, 11, 22, 17, 0),
        "2026-11-22T17:00",
        utc(2026, 11, 22, 16, 0),
    ),
    (
        "cron-leap-day",
        sched("cron:0 8 29 2 *", "00:00", "UTC"),
        utc(2027, 6, 1, 0, 0),
        "2024-02-29",
        utc(2024, 2, 29, 8, 0),
    ),
]


@pytest.mark.parametrize(
    ("schedule", "now", "key", "due"),
    [c[1:] for c in LATEST_CASES],
    ids=[c[0] for c in LATEST_CASES],
)
def test_latest_due_period(schedule: Schedule, now: datetime, key: str, due: datetime) -> None:
    assert latest_due_period(schedule, now) == Period(key=key, due_at=due)


NEXT_CASES = [
    (
        "tokyo-at-due-is-strict",
        sched("daily", "08:00", "Asia/Tokyo"),
        utc(2026, 11, 22, 23, 0),
        "2026-11-24",
        utc(2026, 11, 23, 23, 0),
    ),
    (
        "ny-fold-not-twice",
        sched("daily", "01:30", "America/New_York"),
        utc(2026, 11, 1, 5, 31),
        "2026-11-02",
        utc(2026, 11, 2, 6, 30),
    ),
    (
        "ny-into-gap",
        sched("daily", "02:30", "America/New_York"),
        utc(2026, 3, 7, 12, 0),
        "2026-03-08",
        utc(2026, 3, 8, 7, 30),
    ),
    (
        "weekdays-friday-evening",
        sched("weekdays", "08:00", "Asia/Kolkata"),
        utc(2026, 11, 27, 12, 0),
        "2026-11-30",
        utc(2026, 11, 30, 2, 30),
    ),
    (
        "weekly-sun-auckland",
        sched("weekly:sun", "20:00", "Pacific/Auckland"),
        utc(2026, 11, 22, 0, 0),
        "2026-W47",
        utc(2026, 11, 22, 7, 0),
    ),
    (
        "cron-in-gap-shifted",
        sched("cron:30 2 * * *", "00:00", "America/New_York"),
        utc(2026, 3, 8, 0, 0),
        "2026-03-08",
        utc(2026, 3, 8, 7, 30),
    ),
]


@pytest.mark.parametrize(
    ("schedule", "now", "key", "due"),
    [c[1:] for c in NEXT_CASES],
    ids=[c[0] for c in NEXT_CASES],
)
def test_next_due_period(schedule: Schedule, now: datetime, key: str, due: datetime) -> None:
    assert next_due_period(schedule, now) == Period(key=key, due_at=due)


def test_naive_now_is_rejected() -> None:
    with pytest.raises(ValueError, match="must be timezone-aware"):
        latest_due_period(sched("daily", "08:00", "UTC"), datetime(2026, 11, 22, 8, 0))


def test_unknown_time_zone_is_named() -> None:
    with pytest.raises(ValueError, match="unknown time zone 'Mars/Olympus'"):
        latest_due_period(sched("daily", "08:00", "Mars/Olympus"), utc(2026, 11, 22))


# ---------------------------------------------------------------- outages and DST years


def test_three_day_outage_sends_one_digest_for_the_latest_period() -> None:
    """Daemon down from after Thursday's send until Sunday 10:00 Tokyo time."""
    schedule = sched("daily", "08:00", "Asia/Tokyo")
    last_sent = latest_due_period(schedule, utc(2026, 11, 19, 0, 0))
    assert last_sent is not None and last_sent.key == "2026-11-19"
    back_up = utc(2026, 11, 22, 1, 0)  # Sunday 10:00 JST
    latest = latest_due_period(schedule, back_up)
    assert latest == Period("2026-11-22", utc(2026, 11, 21, 23, 0))
    missed = due_periods(schedule, last_sent.due_at, back_up)
    assert [p.key for p in missed] == ["2026-11-20", "2026-11-21", "2026-11-22"]


@pytest.mark.parametrize(
    ("tz", "send_at"),
    [
        ("America/New_York", "02:30"),
        ("America/New_York", "01:30"),
        ("Pacific/Auckland", "02:30"),
        ("Pacific/Auckland", "03:00"),
        ("Europe/London", "01:00"),
        ("Asia/Kolkata", "00:00"),
        ("Australia/Lord_Howe", "02:15"),
    ],
    ids=[
        "ny-gap",
        "ny-fold",
        "akl-gap",
        "akl-fold-end",
        "london-gap-start",
        "kolkata-midnight",
        "lord-howe-half-hour-dst",
    ],
)
def test_daily_schedule_has_exactly_one_period_per_local_day_for_a_year(
    tz: str, send_at: str
) -> None:
    schedule = sched("daily", send_at, tz)
    periods = due_periods(schedule, utc(2025, 12, 31, 12, 0), utc(2026, 12, 31, 12, 0))
    keys = [p.key for p in periods]
    assert len(keys) == len(set(keys)) == 365
    assert [p.due_at for p in periods] == sorted(p.due_at for p in periods)
    for p in periods:  # each period becomes "latest" exactly at its due instant
        assert latest_due_period(schedule, p.due_at) == p
        assert latest_due_period(schedule, p.due_at - timedelta(microseconds=1)) != p
        assert next_due_period(schedule, p.due_at - timedelta(microseconds=1)) == p


def test_cron_every_half_hour_through_the_spring_gap_has_no_duplicate_instants() -> None:
    schedule = sched("cron:*/30 * * * *", "00:00", "America/New_York")
    periods = due_periods(schedule, utc(2026, 3, 8, 5, 0), utc(2026, 3, 8, 9, 0))
    # 00:30 01:00 01:30 EST, then 03:00 03:30 04:00 04:30 05:00 EDT: 02:xx shifted onto 03:xx.
    assert [p.key for p in periods] == [
        "2026-03-08T00:30",
        "2026-03-08T01:00",
        "2026-03-08T01:30",
        "2026-03-08T03:00",
        "2026-03-08T03:30",
        "2026-03-08T04:00",
        "2026-03-08T04:30",
        "2026-03-08T05:00",
    ]


def test_cron_every_half_hour_fires_once_in_the_repeated_autumn_hour() -> None:
    schedule = sched("cron:*/30 * * * *", "00:00", "America/New_York")
    periods = due_periods(schedule, utc(2026, 11, 1, 4, 45), utc(2026, 11, 1, 7, 15))
    # 01:00 and 01:30 EDT fire; the repeated 01:00 and 01:30 EST do not.
    assert [(p.key, p.due_at.hour, p.due_at.minute) for p in periods] == [
        ("2026-11-01T01:00", 5, 0),
        ("2026-11-01T01:30", 5, 30),
        ("2026-11-01T02:00", 7, 0),
    ]


def test_a_skipped_calendar_day_is_one_period() -> None:
    """Samoa skipped 30 December 2011 entirely: that day's digest is the 31st's."""
    schedule = sched("daily", "08:00", "Pacific/Apia")
    periods = due_periods(schedule, utc(2011, 12, 28, 0, 0), utc(2011, 12, 31, 0, 0))
    assert [p.key for p in periods] == ["2011-12-28", "2011-12-29", "2011-12-31"]


TZS = [
    "Asia/Tokyo",
    "Asia/Kolkata",
    "Pacific/Auckland",
    "America/New_York",
    "Europe/London",
    "Australia/Lord_Howe",
    "America/St_Johns",
    "UTC",
]
FREQS = [
    "daily",
    "weekdays",
    "weekly:mon",
    "weekly:sun",
    "cron:0 8 * * 1-5",
    "cron:15 2 * * *",
    "cron:0 */6 * * *",
    "cron:30 1 1,15 * *",
]


@given(
    tz=st.sampled_from(TZS),
    freq=st.sampled_from(FREQS),
    send_at=st.times(),
    now=st.datetimes(
        min_value=datetime(2020, 1, 1), max_value=datetime(2035, 1, 1), timezones=st.just(UTC)
    ),
)
def test_latest_and_next_bracket_now_with_nothing_between(
    tz: str, freq: str, send_at: time, now: datetime
) -> None:
    schedule = Schedule(frequency=freq, send_at=send_at.replace(microsecond=0), timezone=tz)
    latest = latest_due_period(schedule, now)
    upcoming = next_due_period(schedule, now)
    assert latest is not None
    assert latest.due_at <= now < upcoming.due_at
    assert latest.key != upcoming.key
    assert due_periods(schedule, latest.due_at, upcoming.due_at) == [upcoming]


# ---------------------------------------------------------------- labels


@pytest.mark.parametrize(
    ("schedule", "key", "label"),
    [
        (sched("daily", "08:00", "UTC"), "2026-11-23", "Monday 23 November 2026"),
        (sched("weekdays", "08:00", "UTC"), "2026-11-27", "Friday 27 November 2026"),
        (sched("weekly:wed", "08:00", "UTC"), "2026-W48", "week of 23 Nov 2026"),
        (sched("weekly:mon", "08:00", "UTC"), "2026-W53", "week of 28 Dec 2026"),
        (
            sched("cron:0 8,17 * * *", "08:00", "UTC"),
            "2026-11-22T17:00",
            "Sunday 22 November 2026, 17:00",
        ),
    ],
    ids=["daily", "weekdays", "weekly", "weekly-53", "cron-several-a-day"],
)
def test_period_label(schedule: Schedule, key: str, label: str) -> None:
    assert period_label(schedule, Period(key=key, due_at=utc(2026, 11, 23))) == label


def test_period_label_rejects_a_key_of_another_schedule() -> None:
    with pytest.raises(
        ValueError, match="period key '2026-11-23' does not belong to a 'weekly:mon'"
    ):
        period_label(sched("weekly:mon", "08:00", "UTC"), Period("2026-11-23", utc(2026, 11, 23)))


def test_cached_answers_follow_now_backwards_and_forwards() -> None:
    schedule = sched("daily", "08:00", "Asia/Tokyo")
    nows = [utc(2026, 11, 22, 23, 0), utc(2026, 11, 20, 0, 0), utc(2026, 11, 22, 22, 59),
            utc(2026, 11, 22, 23, 0), utc(2027, 1, 1, 0, 0)]  # fmt: skip
    keys = [latest_due_period(schedule, n) for n in nows]
    assert [p.key for p in keys if p] == [
        "2026-11-23",
        "2026-11-20",
        "2026-11-22",
        "2026-11-23",
        "2027-01-01",
    ]
    assert next_due_period(schedule, utc(2026, 11, 20, 0, 0)).key == "2026-11-21"
