"""The clocks Paperpost's processes read: the real one, and a simulated one for testing.

``[testing] clock_file`` (docs/operating.md, "Testing settings") names a file that holds one
ISO-8601 UTC instant, written by a test harness (the soak, ``bench/soak.py``). The
daemon, ``run --once`` and ``paperpost worker`` then read the time from that file instead
of the system clock: :class:`FileClock` returns the instant it holds and reads the file
again only when its modification time, size or inode changed (the harness replaces it with
a rename, so a reader never sees half a write). The setting is refused unless the
environment variable ``PAPERPOST_TESTING`` is ``1`` (checked by the config loader,
``pipeline.config.models.TestingConfig``): a
production daemon never runs on a clock someone else can move.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.errors import PaperpostError

if TYPE_CHECKING:
    from pipeline.config import Config

Clock = Callable[[], datetime]


class ClockFileError(PaperpostError):
    """The clock file cannot be read, or does not hold an ISO-8601 UTC instant."""


def parse_instant(text: str) -> datetime:
    """An ISO-8601 instant with a UTC offset (``2026-03-28T23:00:00+00:00`` or ``...Z``),
    as an aware UTC datetime; a naive or unparsable text is an error."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise ClockFileError(f"expected an ISO-8601 instant, found {text.strip()[:64]!r}") from exc
    if value.tzinfo is None or value.utcoffset() is None:
        raise ClockFileError(f"expected an instant with a UTC offset, found {text.strip()[:64]!r}")
    return value.astimezone(UTC)


def write_instant(path: Path, instant: datetime) -> None:
    """Set a clock file to ``instant`` (atomically: a temporary file renamed over it)."""
    if instant.tzinfo is None:
        raise ValueError("the instant must be timezone-aware")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(instant.astimezone(UTC).isoformat() + "\n", encoding="utf-8")
    os.replace(tmp, path)


class FileClock:
    """A clock that returns the instant held in ``path`` (see the module's docstring).

    The first call must find a valid instant; later a file that cannot be read or parsed
    (mid-replacement on a file system without atomic rename) keeps the last instant read.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._value: datetime | None = None

    def __call__(self) -> datetime:
        with self._lock:
            try:
                st = os.stat(self.path)
            except OSError as exc:
                if self._value is not None:
                    return self._value
                raise ClockFileError(f"cannot read the clock file {self.path}: {exc}") from exc
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
            if stamp != self._stamp or self._value is None:
                try:
                    value = parse_instant(self.path.read_text(encoding="utf-8"))
                except (OSError, ClockFileError) as exc:
                    if self._value is not None:
                        return self._value
                    raise ClockFileError(f"the clock file {self.path}: {exc}") from exc
                self._stamp, self._value = stamp, value
            return self._value


def clock_for(clock_file: Path | None) -> Clock | None:
    """The clock a process should use: a :class:`FileClock` over ``clock_file`` (checked
    readable now, so a wrong path fails at start-up), or None for the system clock."""
    if clock_file is None:
        return None
    clock = FileClock(clock_file)
    clock()
    return clock


def config_clock(config: Config) -> Clock | None:
    """The clock ``[testing] clock_file`` asks for (relative to the config's folder), or
    None: the system clock. The config loader has already refused the setting outside
    ``PAPERPOST_TESTING=1``."""
    path = config.file.testing.clock_file
    if path is None:
        return None
    return clock_for((config.path.parent / path.expanduser()).resolve())


__all__ = [
    "Clock",
    "ClockFileError",
    "FileClock",
    "clock_for",
    "config_clock",
    "parse_instant",
    "write_instant",
]
