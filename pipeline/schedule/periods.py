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


def _local_times(rule: _Rule, send_at: time, day: date) -> tuple[time, ...]:
    if rule.kind == "daily":
        return (send_at,)
    if rule.kind == "weekdays":
        return (send_at,) if day.weekday() < 5 else ()
    if rule.kind == "weekly":
        return (send_at,) if day.weekday() == rule.weekday else ()
    assert rule.cron is not None
    return rule.cron.times() if rule.cron.matches_date(day) else ()


# One firing: (due instant in UTC, nominal local date, period key).
_Firing = tuple[datetime, date, str]


@lru_cache(maxsize=65536)
def _firings(frequency: str, send_at: time, timezone: str, day: date) -> tuple[_Firing, ...]:
    """The firings whose nominal local date is ``day``, by instant (cached: ticks repeat days)."""
    rule, zone = _rule(frequency), _zone(timezone)
    out = []
    for t in _local_times(rule, send_at, day):
        # fold=0: the first of a repeated wall time; a skipped one is shifted past the gap.
        local = datetime.combine(day, t.replace(tzinfo=None, fold=0), tzinfo=zone)
        due = local.astimezone(UTC)
        if rule.kind == "weekly":
            year, week, _ = day.isocalendar()
            key = f"{year}-W{week:02d}"
        elif rule.cron is not None and not rule.cron.once_a_day:
            key = due.astimezone(zone).strftime("%Y-%m-%dT%H:%M")
        else:
            key = day.isoformat()
        out.append((due, day, key))
    return tuple(sorted(out))


def _firings_on(schedule: Schedule, day: date) -> tuple[_Firing, ...]:
    return _firings(schedule.frequency, schedule.send_at, schedule.timezone, day)


def _check_now(now: datetime) -> datetime:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"now must be timezone-aware, got naive {now.isoformat()}")
    return now.astimezone(UTC)


def _scan(schedule: Schedule, now: datetime, step: int) -> _Firing | None:
    """Walk local days from ``now``'s (backwards if ``step`` is -1) for the nearest firing.

    Firings at one instant (a cron inside a spring gap, a skipped calendar day)
    are one period: the later nominal date wins. After the first day with a
    match, one more day is checked, in case a shifted wall time crossed midnight.
    """
    rule = _rule(schedule.frequency)
    today = now.astimezone(_zone(schedule.timezone)).date()
    best: _Firing | None = None
    extra_days = 1
    for offset in range(-1, _SCAN_DAYS[rule.kind]):
        day = today - timedelta(days=offset) if step < 0 else today + timedelta(days=offset)
        for firing in _firings_on(schedule, day):
            if (firing[0] <= now if step < 0 else firing[0] > now) and _nearer(firing, best, step):
                best = firing
        if best is not None:
            if extra_days == 0:
                break
            extra_days -= 1
    return best


def _nearer(firing: _Firing, best: _Firing | None, step: int) -> bool:
    """Later instants win going back, earlier ones going forward; ties go to the later date."""
    if best is None:
        return True
    if firing[0] != best[0]:
        return firing[0] > best[0] if step < 0 else firing[0] < best[0]
    return firing[1] > best[1]


# Per schedule, the last computed (latest firing, next firing): valid for every ``now``
# in [latest, next), so a dispatch tick over many subscribers is mostly dict look-ups.
_Bracket = tuple[_Firing | None, _Firing | None]
_BRACKETS: dict[tuple[str, time, str], _Bracket] = {}
_BRACKETS_MAX = 200_000


def _bracket(schedule: Schedule, now: datetime) -> _Bracket:
    cache_key = (schedule.frequency, schedule.send_at, schedule.timezone)
    hit = _BRACKETS.get(cache_key)
    if hit is not None:
        latest, upcoming = hit
        if (latest is None or latest[0] <= now) and upcoming is not None and now < upcoming[0]:
            return hit
    found = (_scan(schedule, now, -1), _scan(schedule, now, +1))
    if len(_BRACKETS) >= _BRACKETS_MAX:
        _BRACKETS.clear()
    _BRACKETS[cache_key] = found
    return found


def latest_due_period(schedule: Schedule, now: datetime) -> Period | None:
    """The most recent period whose due instant is at or before ``now``.

    ``None`` only when the schedule has not fired in the last nine years (a
    cron expression for a date that does not occur).
    """
    found = _bracket(schedule, _check_now(now))[0]
    return None if found is None else Period(key=found[2], due_at=found[0])


def next_due_period(schedule: Schedule, now: datetime) -> Period:
    """The first period whose due instant is strictly after ``now``."""
    found = _bracket(schedule, _check_now(now))[1]
    if found is None:
        raise ValueError(f"schedule {schedule.frequency!r} does not fire in the next nine years")
    return Period(key=found[2], due_at=found[0])


def due_periods(schedule: Schedule, after: datetime, until: datetime) -> list[Period]:
    """Every period with ``after < due_at <= until``, oldest first.

    For a catch-up policy that sends one digest per missed period instead of
    one for the latest; the caller bounds the span.
    """
    after, until = _check_now(after), _check_now(until)
    if until <= after:
        return []
    zone = _zone(schedule.timezone)
    first = after.astimezone(zone).date() - timedelta(days=1)
    last = until.astimezone(zone).date() + timedelta(days=1)
    by_instant: dict[datetime, tuple[date, str]] = {}
    for i in range((last - first).days + 1):
        for due, nominal, key in _firings_on(schedule, first + timedelta(days=i)):
            if after < due <= until and (due not in by_instant or by_instant[due][0] < nominal):
                by_instant[due] = (nominal, key)
    return [Period(key=key, due_at=due) for due, (_, key) in sorted(by_instant.items())]


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
