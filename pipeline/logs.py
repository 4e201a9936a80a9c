"""Logging set-up: one line per event, optionally JSON; secrets never reach a log record.

An operator watches the daemon through its log, so every state change that matters is
one INFO record carrying an *event name* and its numbers as structured fields (the
stdlib ``extra=`` mechanism, built with :func:`event`):

=================  ===================  ================================================
event              logger               fields
=================  ===================  ================================================
source.fetched     paperpost.ingest     source, entries, new, updated, skipped,
                                        not_modified
source.failed      paperpost.ingest     source, failures, error (WARNING; ERROR at alert)
period.planned     paperpost.app        readers, planned, papers, skipped_empty,
                                        already_planned, seconds
batch.sent         paperpost.deliver    batch, sent, failed, deferred, ambiguous
dispatch.finished  paperpost.app        planned, sent, failed, deferred, ambiguous,
                                        aborted, seconds
unsubscribe        paperpost.app        subscriber, reason
feedback           paperpost.app        subscriber, paper, signal
bounce             paperpost.bounces    subscriber, kind, action (emitted by the bounce
                                        handling)
=================  ===================  ================================================

The text format shows the message only (it already says the numbers); ``--log-json``
writes one JSON object per line with ``ts``, ``level``, ``logger``, ``event`` (when the
record has one), ``message`` and every structured field. The per-digest "sent digest"
line is DEBUG (``-v``): at 100,000 readers it would drown everything else.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.progress import Progress

# Attributes every LogRecord has: anything else on a record came in through ``extra=``.
_STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}

# The event names of the table above, for the docs and the tests.
EVENTS = (
    "source.fetched",
    "source.failed",
    "period.planned",
    "batch.sent",
    "dispatch.finished",
    "unsubscribe",
    "feedback",
    "bounce",
)


def event(name: str, /, **fields: object) -> dict[str, object]:
    """The ``extra=`` mapping of one structured record: ``log.info("...",
    extra=event("bounce", subscriber=email, kind="hard"))``. Field names must not be
    LogRecord attributes (``name``, ``msg``, ``args`` ...): the logging module refuses
    those with a KeyError, so a clash shows up the first time the line runs."""
    return {"event": name, **fields}


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The structured fields a record carries (everything given through ``extra=``)."""
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        fields = record_fields(record)
        if "event" in fields:
            entry["event"] = fields.pop("event")
        entry["message"] = record.getMessage()
        for key, value in fields.items():
            entry.setdefault(key, value)
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time: a live progress display
    (``pipeline.progress``) swaps it to print log lines above its bars."""

    def __init__(self) -> None:
        super().__init__()

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def configure_logging(*, verbose: bool = False, json_lines: bool = False) -> None:
    """Log to stderr: INFO and up (the events above), DEBUG with ``verbose``."""
    handler = _StderrHandler()
    handler.setFormatter(
        JsonFormatter()
        if json_lines
        else logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    )
    root = logging.getLogger("paperpost")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.propagate = False


def progress_display() -> Progress:
    """The progress display for a long command: live bars when stdout is a terminal,
    plain lines otherwise (pipeline.progress)."""
    from pipeline.progress import progress_for

    return progress_for(sys.stdout)
