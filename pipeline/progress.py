"""Progress of long operator commands (``run --once``, ``subscribers import``).

A ``run --once`` over many readers takes minutes, and a silent terminal looks like a hung
one. The use cases report their steps to a :class:`Progress`: the base class does
nothing (the daemon, tests, library callers), :class:`TerminalProgress` draws live bars
with ``rich`` when the output is a terminal, and :class:`LineProgress` writes plain lines
when it is not (a cron mail, a CI log): a line when a step starts, one at each further
tenth of its total, and one when it ends, so a log file stays short.

Steps are named by a key (``"ingest"``, ``"plan"``, ``"deliver"``, ``"import"``); a step's
total may be unknown (None) when it starts, or be set later.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from rich.progress import Progress as RichProgress
    from rich.progress import TaskID


class Progress:
    """Receives the steps of a long operation; this base class ignores them."""

    def start(self, key: str, label: str, total: int | None = None) -> None:
        """Step ``key`` begins; ``total`` units of work when known."""

    def advance(self, key: str, n: int = 1) -> None:
        """``n`` more units of step ``key`` are done."""

    def finish(self, key: str, note: str = "") -> None:
        """Step ``key`` ended; ``note`` says how (``"3 sent, 1 failed"``)."""

    def close(self) -> None:
        """No more steps: stop drawing."""

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


@dataclass
class _Step:
    label: str
    total: int | None
    done: int = 0
    mark: int | None = None  # the count at which the next line is due


class LineProgress(Progress):
    """Plain lines, for output that is not a terminal: at most about a dozen per step."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._steps: dict[str, _Step] = {}

    def _write(self, text: str) -> None:
        self._out.write(text + "\n")
        self._out.flush()

    def start(self, key: str, label: str, total: int | None = None) -> None:
        self._steps[key] = _Step(label, total, mark=_next_mark(0, total))
        self._write(f"{label}: started" + (f" (0/{total})" if total else ""))

    def advance(self, key: str, n: int = 1) -> None:
        step = self._steps.get(key)
        if step is None:
            return
        step.done += n
        if step.total and step.mark is not None and step.done >= step.mark:
            self._write(
                f"{step.label}: {step.done}/{step.total} ({100 * step.done // step.total} %)"
            )
            step.mark = _next_mark(step.done, step.total)

    def finish(self, key: str, note: str = "") -> None:
        step = self._steps.pop(key, None)
        if step is not None:
            self._write(f"{step.label}: done" + (f", {note}" if note else ""))


def _next_mark(done: int, total: int | None) -> int | None:
    """The count at which the next line is due: the next whole tenth of ``total``."""
    if not total:
        return None
    tenth = max(1, total // 10)
    return (done // tenth + 1) * tenth


class TerminalProgress(Progress):
    """Live bars (``rich``) on a terminal; each bar stays on screen with its result."""

    def __init__(self, out: TextIO) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
        )
        from rich.progress import Progress as RichProgress

        self._bars: RichProgress = RichProgress(
            SpinnerColumn(finished_text="✓"),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[note]}"),
            console=Console(file=out),
            # Output to the same terminal (log records on stderr, a command's own lines)
            # is printed above the bars; a stream sent to a file or a pipe stays there.
            redirect_stdout=sys.stdout.isatty(),
            redirect_stderr=sys.stderr.isatty(),
        )
        self._tasks: dict[str, TaskID] = {}
        self._bars.start()

    def start(self, key: str, label: str, total: int | None = None) -> None:
        self._tasks[key] = self._bars.add_task(label, total=total, note="")

    def advance(self, key: str, n: int = 1) -> None:
        if key in self._tasks:
            self._bars.advance(self._tasks[key], n)

    def finish(self, key: str, note: str = "") -> None:
        task = self._tasks.pop(key, None)
        if task is None:
            return
        done = self._bars.tasks[task].completed
        self._bars.update(task, total=max(done, 1), completed=max(done, 1), note=note)

    def close(self) -> None:
        self._bars.stop()


def progress_for(out: TextIO | None = None) -> Progress:
    """Bars on a terminal, plain lines otherwise (``out`` defaults to stdout)."""
    out = out or sys.stdout
    if out.isatty():
        return TerminalProgress(out)
    return LineProgress(out)


__all__ = ["LineProgress", "Progress", "TerminalProgress", "progress_for"]
