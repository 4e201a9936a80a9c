"""Operator logs: one structured INFO record per state change that matters, and the JSON
line format of ``--log-json`` (pipeline/logs.py has the table of events)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pipeline.app import App
from pipeline.config import load_config
from pipeline.logs import EVENTS, JsonFormatter, configure_logging, event, record_fields
from tests.factories import MONDAY_NOON as NOW
from tests.factories import at


@pytest.fixture
def events(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Every record of the "paperpost" loggers at INFO and up (the default level). The
    CLI's set-up stops propagation to the root logger, so caplog listens there itself."""
    logger = logging.getLogger("paperpost")
    level, propagate = logger.level, logger.propagate
    logger.addHandler(caplog.handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # caplog's root handler would see every record twice
    caplog.handler.setLevel(logging.INFO)
    try:
        yield caplog
    finally:
        logger.removeHandler(caplog.handler)
        logger.setLevel(level)
        logger.propagate = propagate


def named(caplog: pytest.LogCaptureFixture, name: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", None) == name]


async def test_a_cycle_logs_each_source_the_planning_each_batch_and_the_end(
    write_config, events: pytest.LogCaptureFixture
) -> None:
    path = write_config(mail_extra="batch_size = 2")
    with App(load_config(path), clock=at(NOW)) as app:
        report = await app.run_once()
    assert report.deliver.sent == 3

    fetched = {r.source: r for r in named(events, "source.fetched")}  # type: ignore[attr-defined]
    assert set(fetched) == {"daily-papers-001", "daily-papers-004", "arxiv-api-testing", "hf-daily"}
    outcome = {o.name: o for o in report.sources}
    for name, record in fetched.items():
        assert record.levelno == logging.INFO and record.name == "paperpost.ingest"
        fields = record_fields(record)
        assert (fields["entries"], fields["new"]) == (outcome[name].entries, outcome[name].new)
    assert sum(record_fields(r)["new"] for r in fetched.values()) > 0

    [planned] = named(events, "period.planned")
    fields = record_fields(planned)
    assert (fields["readers"], fields["planned"]) == (3, 3)
    assert fields["papers"] == sum(report.plan.items.values()) > 0

    batches = named(events, "batch.sent")  # batch_size 2: a batch of 2, then the last 1
    assert [(record_fields(r)["batch"], record_fields(r)["sent"]) for r in batches] == [
        (1, 2),
        (2, 1),
    ]
    assert all(r.levelno == logging.INFO and r.name == "paperpost.deliver" for r in batches)

    [finished] = named(events, "dispatch.finished")
    assert record_fields(finished)["sent"] == 3 and finished.levelno == logging.INFO
    # One line per digest is DEBUG (-v): at 100,000 readers it would drown the rest.
    assert not [r for r in events.records if r.getMessage().startswith("sent digest")]


async def test_a_failing_source_is_one_structured_record(
    write_config, tmp_path: Path, events: pytest.LogCaptureFixture
) -> None:
    sources = f'\n[[sources]]\nname = "gone"\nkind = "feed"\nurl = "{tmp_path / "gone.rss"}"\n'
    path = write_config(sources=sources)
    with App(load_config(path), clock=at(NOW)) as app:
        app.sync()
        [outcome] = await app.ingest()
    assert not outcome.ok
    [failed] = named(events, "source.failed")
    fields = record_fields(failed)
    assert (fields["source"], fields["failures"]) == ("gone", 1)
    assert fields["error"] == outcome.error
    assert failed.levelno == logging.WARNING


async def test_unsubscribes_and_feedback_presses_are_logged_once_each(
    write_config, events: pytest.LogCaptureFixture
) -> None:
    path = write_config()
    with App(load_config(path), clock=at(NOW)) as app:
        app.sync()
        assert app.record_feedback("ada@lab.example", "2305.18290", "more")
        assert not app.record_feedback("nobody@lab.example", "2305.18290", "more")
        assert app.unsubscribe("grace@lab.example")
        assert not app.unsubscribe("grace@lab.example")  # already: no state change, no event
        assert app.unsubscribe("zoe@lab.example", reason="operator")

    [feedback] = named(events, "feedback")
    assert record_fields(feedback) == {
        "event": "feedback",
        "subscriber": "ada@lab.example",
        "paper": "2305.18290",
        "signal": "more",
    }
    unsubscribes = [record_fields(r) for r in named(events, "unsubscribe")]
    assert unsubscribes == [
        {"event": "unsubscribe", "subscriber": "grace@lab.example", "reason": "link"},
        {"event": "unsubscribe", "subscriber": "zoe@lab.example", "reason": "operator"},
    ]


def test_json_lines_carry_ts_level_logger_event_message_and_fields() -> None:
    logger = logging.getLogger("paperpost.bounces")
    record = logger.makeRecord(
        logger.name,
        logging.INFO,
        __file__,
        1,
        "hard bounce for %s",
        ("ada@lab.example",),
        None,
        extra=event("bounce", subscriber="ada@lab.example", kind="hard", delivery=7),
    )
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert list(entry)[:5] == ["ts", "level", "logger", "event", "message"]
    assert entry["event"] == "bounce" and entry["logger"] == "paperpost.bounces"
    assert entry["level"] == "info" and entry["message"] == "hard bounce for ada@lab.example"
    assert (entry["subscriber"], entry["kind"], entry["delivery"]) == ("ada@lab.example", "hard", 7)
    when = datetime.fromisoformat(entry["ts"])
    assert abs(when - datetime.now(UTC)) < timedelta(minutes=5)
    assert "bounce" in EVENTS


def test_a_field_named_like_a_record_attribute_is_refused_at_once() -> None:
    with pytest.raises(KeyError):
        logging.getLogger("paperpost.test").makeRecord(
            "paperpost.test", logging.INFO, __file__, 1, "x", (), None, extra=event("x", name="n")
        )


def test_default_level_is_info_and_verbose_is_debug() -> None:
    logger = logging.getLogger("paperpost")
    saved = (logger.level, logger.handlers[:], logger.propagate)
    try:
        configure_logging()
        assert logger.getEffectiveLevel() == logging.INFO
        configure_logging(verbose=True, json_lines=True)
        assert logger.getEffectiveLevel() == logging.DEBUG
        assert isinstance(logger.handlers[0].formatter, JsonFormatter)
    finally:
        logger.setLevel(saved[0])
        logger.handlers[:] = saved[1]
        logger.propagate = saved[2]
