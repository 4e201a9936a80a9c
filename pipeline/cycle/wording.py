"""Schedules and periods in words a reader understands, for the digest's text.

``describe_schedule`` says when digests come ("weekdays at 09:00 Europe/London"); a
cron schedule, which no reader can be expected to read, is described by its next three
send times in the reader's zone. ``zoned_label`` adds the zone to a period label that
carries a time of day, so "08:00" in a subject is never ambiguous.
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from pipeline.domain import Period, Schedule
from pipeline.schedule.periods import next_due_period, parse_frequency, period_label

__all__ = ["describe_schedule", "zoned_label"]

_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_SHORT = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _when(moment: datetime) -> str:
    """``Tue 24 Nov 08:00``, whatever the process locale."""
    day = _DAYS[moment.weekday()][:3]
    return f"{day} {moment.day} {_MONTHS[moment.month - 1]} {moment:%H:%M}"


def describe_schedule(schedule: Schedule, *, now: datetime) -> str:
    """``daily at 07:30 Europe/London``, ``weekdays at ...``, ``weekly on Mondays at ...``,
    or for cron ``at these times (cron 0 8 * * 1-5): next Tue 24 Nov 08:00, ... Europe/London``.
    """
    frequency = parse_frequency(schedule.frequency)
    zone = schedule.timezone
    at = f"{schedule.send_at:%H:%M} {zone}"
    if frequency in ("daily", "weekdays"):
        return f"{frequency} at {at}"
    if frequency.startswith("weekly:"):
        day = _DAYS[_SHORT.index(frequency.removeprefix("weekly:"))]
        return f"weekly on {day}s at {at}"
    local = ZoneInfo(zone)
    times: list[str] = []
    moment = now
    for _ in range(3):
        try:
            moment = next_due_period(schedule, moment).due_at
        except ValueError:
            break
        times.append(_when(moment.astimezone(local)))
    cron = frequency.removeprefix("cron:")
    if not times:
        return f"on a custom schedule (cron {cron}, {zone}) that sends no more digests"
    listed = ", ".join(times[:-1]) + (" and " if len(times) > 1 else "") + times[-1]
    return f"on a custom schedule (cron {cron}); the next digests come {listed} {zone}"


def zoned_label(schedule: Schedule, period: Period) -> str:
    """The period's label; one with a time of day ("..., 08:00") also names the zone."""
    label = period_label(schedule, period)
    return f"{label} {schedule.timezone}" if "T" in period.key else label
