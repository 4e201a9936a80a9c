"""A rate limiter for outgoing messages: evenly spaced slots, no burst.

Pure bookkeeping over a clock passed in, so it is tested without sleeping;
the SMTP mailer sleeps for the delay it returns.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["Pacer"]


class Pacer:
    """Hand out send slots at most ``rate_per_second`` apart (``None`` = unlimited)."""

    def __init__(self, rate_per_second: float | None, clock: Callable[[], float]) -> None:
        if rate_per_second is not None and rate_per_second <= 0:
            raise ValueError(f"rate_per_second must be positive, got {rate_per_second}")
        self._interval = 0.0 if rate_per_second is None else 1.0 / rate_per_second
        self._clock = clock
        self._next = float("-inf")

    def reserve(self) -> float:
        """Reserve the next slot; return how many seconds to wait before using it."""
        if self._interval == 0.0:
            return 0.0
        now = self._clock()
        slot = max(now, self._next)
        self._next = slot + self._interval
        return slot - now
