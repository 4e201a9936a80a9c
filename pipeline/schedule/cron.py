"""A small, strict parser for standard five-field cron expressions (pure).

Why not a library: APScheduler's ``CronTrigger`` numbers weekdays from Monday
(``0`` = Monday, unlike cron's Sunday) and ANDs day-of-month with day-of-week,
and it belongs to the scheduler module only ("one library, one home");
``croniter`` is not a dependency and its maintenance has changed hands. The
grammar is small enough to own, and owning it lets the schedule maths work on
local calendar dates, which is what DST-correct periods need.

Semantics follow Vixie cron (the cron of Debian, macOS and crontab(5)):

- fields: minute 0-59, hour 0-23, day of month 1-31, month 1-12 or
  ``jan``-``dec``, day of week 0-7 or ``sun``-``sat`` (0 and 7 are Sunday);
- each field is a comma list of ``*``, ``N``, ``N-M``, each optionally
  ``/step``; ``N/step`` means ``N-max/step``;
- when both day of month and day of week are restricted (neither starts
  with ``*``) a day matches if EITHER matches; otherwise both must.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, time

_MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DOW_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
# Longest month length, counting 29 February (leap years exist).
_MONTH_MAX_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()
    names_start: int = 0


_FIELDS = (
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day of month", 1, 31),
    _Field("month", 1, 12, _MONTH_NAMES, 1),
    _Field("day of week", 0, 7, _DOW_NAMES, 0),
)


@dataclass(frozen=True, slots=True)
class CronExpr:
    """A parsed cron expression; ``text`` is its normal form (lower case, single spaces)."""

    text: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday ... 6 = Saturday
    days_restricted: bool
    weekdays_restricted: bool

    def matches_date(self, day: date) -> bool:
        """Whether the expression fires at some time of this calendar date."""
        if day.month not in self.months:
            return False
        dom = day.day in self.days
        dow = (day.weekday() + 1) % 7 in self.weekdays
        if self.days_restricted and self.weekdays_restricted:
            return dom or dow
        return dom and dow

    def times(self) -> tuple[time, ...]:
        """The wall-clock times of day at which it fires, in order."""
        return tuple(time(h, m) for h in sorted(self.hours) for m in sorted(self.minutes))

    @property
    def once_a_day(self) -> bool:
        return len(self.hours) == 1 and len(self.minutes) == 1


def _number(token: str, spec: _Field, expr: str) -> int:
    if token in spec.names:
        return spec.names.index(token) + spec.names_start
    if not token.isdigit():
        raise ValueError(
            f"cron {expr!r}: {spec.name} field has {token!r}, expected a number "
            f"{spec.low}-{spec.high}" + (f" or a name ({spec.names[0]}...)" if spec.names else "")
        )
    value = int(token)
    if not spec.low <= value <= spec.high:
        raise ValueError(
            f"cron {expr!r}: {spec.name} {value} is out of range {spec.low}-{spec.high}"
        )
    return value


def _parse_field(text: str, spec: _Field, expr: str) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        if not part:
            raise ValueError(f"cron {expr!r}: empty item in {spec.name} field {text!r}")
        base, slash, step_text = part.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) == 0:
                raise ValueError(
                    f"cron {expr!r}: {spec.name} step {step_text!r} must be a positive number"
                )
            step = int(step_text)
        if base == "*":
            low, high = spec.low, spec.high
        elif "-" in base:
            first, _, last = base.partition("-")
            low, high = _number(first, spec, expr), _number(last, spec, expr)
            if low > high:
                raise ValueError(f"cron {expr!r}: {spec.name} range {base!r} runs backwards")
        else:
            low = _number(base, spec, expr)
            high = spec.high if slash else low
        values.update(range(low, high + 1, step))
    return frozenset(values)


def parse_cron(text: str) -> CronExpr:
    """Parse five cron fields; raise ``ValueError`` naming the field that is wrong."""
    fields = text.lower().split()
    if len(fields) != 5:
        raise ValueError(
            f"cron {text!r}: expected 5 fields (minute hour day-of-month month day-of-week), "
            f"found {len(fields)}"
        )
    expr = " ".join(fields)
    minutes, hours, days, months, weekdays = (
        _parse_field(f, spec, expr) for f, spec in zip(fields, _FIELDS, strict=True)
    )
    weekdays = frozenset(d % 7 for d in weekdays)  # 7 is Sunday too
    cron = CronExpr(
        text=expr,
        minutes=minutes,
        hours=hours,
        days=days,
        months=months,
        weekdays=weekdays,
        days_restricted=not fields[2].startswith("*"),
        weekdays_restricted=not fields[4].startswith("*"),
    )
    fires = (cron.days_restricted and cron.weekdays_restricted) or any(
        d <= _MONTH_MAX_DAYS[m - 1] for m in months for d in days
    )
    if not fires:
        raise ValueError(
            f"cron {expr!r}: no month in the expression has such a day; it never fires"
        )
    return cron
