"""Schedule maths: which period of a subscriber's schedule is due (pure; no clock reads).

A schedule names local wall-clock instants in the subscriber's IANA time
zone; each instant is one *period*, identified by a key that is the outbox
key, so a due digest is claimed once whatever fires the dispatch tick.

Keys: the local date ``YYYY-MM-DD`` for ``daily``, ``weekdays`` and cron
expressions that fire at most once a day; the ISO week ``YYYY-Www`` for
``weekly:<day>``; ``YYYY-MM-DDTHH:MM`` (the local wall time of the due
instant) for cron expressions that fire several times a day.

Daylight saving time (the Python ``fold=0`` rule, PEP 495):

- a send time inside the repeated autumn hour is due at its FIRST
  occurrence, once;
- a send time inside the skipped spring hour is due shifted forward by the
  gap (02:30 in New York on the spring-forward day is due at 03:30 EDT), once.

For cron schedules the expression carries the time of day; ``send_at`` is not
used.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pipeline.domain import Period, Schedule
from pipeline.schedule.cron import CronExpr, parse_cron

WEEKDAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTH_NAMES = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
# How many local days to look back / ahead for a period: one week plus slack
# for the fixed kinds; nine years for cron (29 February can be 8 years apart).
_SCAN_DAYS = {"daily": 3, "weekdays": 5, "weekly": 9, "cron": 366 * 9}

Kind = Literal["daily", "weekdays", "weekly", "cron"]


@dataclass(frozen=True, slots=True)
class _Rule:
    kind: Kind
    weekday: int = 0  # weekly: 0 = Monday
    cron: CronExpr | None = None

    @property
    def normal(self) -> str:
        if self.kind == "weekly":
            return f"weekly:{WEEKDAY_NAMES[self.weekday]}"
        if self.cron is not None:
            return f"cron:{self.cron.text}"
        return self.kind


@lru_cache(maxsize=4096)
def _rule(text: str) -> _Rule:
    value = " ".join(text.strip().lower().split())
    if value == "daily":
        return _Rule("daily")
    if value == "weekdays":
        return _Rule("weekdays")
    if value.startswith("weekly:"):
        day = value.removeprefix("weekly:").strip()
        for i, name in enumerate(WEEKDAY_NAMES):
            if day in (name, _DAY_NAMES[i].lower()):
                return _Rule("weekly", weekday=i)
        raise ValueError(
            f"frequency {text!r}: unknown weekday {day!r}; expected one of "
            + ", ".join(f"weekly:{n}" for n in WEEKDAY_NAMES)
        )
    if value.startswith("cron:"):
        return _Rule("cron", cron=parse_cron(value.removeprefix("cron:")))
    if len(value.split()) == 5:
        return _Rule("cron", cron=parse_cron(value))
    raise ValueError(
        f"frequency {text!r} is not understood; expected 'daily', 'weekdays', "
        "'weekly:mon' ... 'weekly:sun', or a cron expression such as 'cron:0 8 * * 1-5'"
    )


def parse_frequency(text: str) -> str:
    """Validate a frequency and return its normal form.

    ``daily`` | ``weekdays`` | ``weekly:mon`` ... ``weekly:sun`` (full day names
    accepted) | ``cron:<5 fields>`` or a bare 5-field cron expression (returned
    as ``cron:<fields>``). Raises ``ValueError`` with a message naming the problem.
    """
    return _rule(text).normal


@lru_cache(maxsize=1024)
def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r} (expected an IANA name)") from exc


def _local_times(rule: _Rule, schedule: Schedule, day: date) -> tuple[time, ...]:
    if rule.kind == "daily":
        return (schedule.send_at,)
    if rule.kind == "weekdays":
        return (schedule.send_at,) if day.weekday() < 5 else ()
    if rule.kind == "weekly":
        return (schedule.send_at,) if day.weekday() == rule.weekday else ()
    assert rule.cron is not None
    return rule.cron.times() if rule.cron.matches_date(day) else ()


def _periods_on(
    rule: _Rule, schedule: Schedule, zone: ZoneInfo, days: Iterable[date]
) -> list[Period]:
    """Every period whose nominal local date is in ``days``, ordered by due instant.

    Wall times that map to the same instant (a cron firing inside a spring
    gap, or a whole skipped day) are one period: the later nominal one.
    """
    by_instant: dict[datetime, tuple[date, str]] = {}
    for day in days:
        for t in _local_times(rule, schedule, day):
            local = datetime.combine(day, t.replace(tzinfo=None, fold=0), tzinfo=zone)
            due = local.astimezone(UTC)
            if rule.kind == "weekly":
                year, week, _ = day.isocalendar()
                key = f"{year}-W{week:02d}"
            elif rule.cron is not None and not rule.cron.once_a_day:
                key = due.astimezone(zone).strftime("%Y-%m-%dT%H:%M")
            else:
                key = day.isoformat()
            previous = by_instant.get(due)
            if previous is None or previous[0] < day:
                by_instant[due] = (day, key)
    return [Period(key=key, due_at=due) for due, (_, key) in sorted(by_instant.items())]


def _check_now(now: datetime) -> datetime:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"now must be timezone-aware, got naive {now.isoformat()}")
    return now.astimezone(UTC)


def latest_due_period(schedule: Schedule, now: datetime) -> Period | None:
    """The most recent period whose due instant is at or before ``now``.

    ``None`` only when the schedule has not fired in the last nine years (a
    cron expression for a date that does not occur).
    """
    now = _check_now(now)
    rule, zone = _rule(schedule.frequency), _zone(schedule.timezone)
    today = now.astimezone(zone).date()
    # Look at two local days at a time, walking back: one day of overlap makes
    # the answer right even where a shifted wall time crosses midnight.
    for back in range(-1, _SCAN_DAYS[rule.kind]):
        day = today - timedelta(days=back)
        due = [
            p
            for p in _periods_on(rule, schedule, zone, (day - timedelta(days=1), day))
            if p.due_at <= now
        ]
        if due:
            return due[-1]
    return None


def next_due_period(schedule: Schedule, now: datetime) -> Period:
    """The first period whose due instant is strictly after ``now``."""
    now = _check_now(now)
    rule, zone = _rule(schedule.frequency), _zone(schedule.timezone)
    today = now.astimezone(zone).date()
    for ahead in range(-1, _SCAN_DAYS[rule.kind]):
        day = today + timedelta(days=ahead)
        later = [
            p
            for p in _periods_on(rule, schedule, zone, (day, day + timedelta(days=1)))
            if p.due_at > now
        ]
        if later:
            return later[0]
    raise ValueError(f"schedule {schedule.frequency!r} does not fire in the next nine years")


def due_periods(schedule: Schedule, after: datetime, until: datetime) -> list[Period]:
    """Every period with ``after < due_at <= until``, oldest first.

    For a catch-up policy that sends one digest per missed period instead of
    one for the latest; the caller bounds the span.
    """
    after, until = _check_now(after), _check_now(until)
    if until <= after:
        return []
    rule, zone = _rule(schedule.frequency), _zone(schedule.timezone)
    first = after.astimezone(zone).date() - timedelta(days=1)
    last = until.astimezone(zone).date() + timedelta(days=1)
    days = (first + timedelta(days=i) for i in range((last - first).days + 1))
    return [p for p in _periods_on(rule, schedule, zone, days) if after < p.due_at <= until]


def _long_date(day: date) -> str:
    return f"{_DAY_NAMES[day.weekday()]} {day.day} {_MONTH_NAMES[day.month - 1]} {day.year}"


def period_label(schedule: Schedule, period: Period) -> str:
    """Human text for a period: ``Monday 23 November 2026`` or ``week of 23 Nov 2026``.

    Several-a-day cron periods add the local time: ``Monday 23 November 2026, 08:00``.
    English names, independent of the process locale.
    """
    rule = _rule(schedule.frequency)
    key = period.key
    try:
        if rule.kind == "weekly":
            year, _, week = key.partition("-W")
            monday = date.fromisocalendar(int(year), int(week), 1)
            return f"week of {monday.day} {_MONTH_NAMES[monday.month - 1][:3]} {monday.year}"
        day_text, _, clock = key.partition("T")
        label = _long_date(date.fromisoformat(day_text))
    except ValueError as exc:
        raise ValueError(
            f"period key {key!r} does not belong to a {rule.normal!r} schedule"
        ) from exc
    return f"{label}, {clock}" if clock else label
