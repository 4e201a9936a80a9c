"""What an operator sees: ``run --once``'s exit status, ``/healthz``'s verdict and its
three reasons, and the progress display (real SMTP server, real database, the web app
over ASGI)."""

from __future__ import annotations

import asyncio
import io
import shutil
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from pipeline.app import App
from pipeline.cli import main
from pipeline.config import load_config
from pipeline.daemon import Daemon
from pipeline.progress import LineProgress, TerminalProgress, progress_for
from tests.conftest import SAMPLES
from tests.factories import MONDAY_NOON as NOW
from tests.factories import at
from tests.smtpd import ScriptedHandler

REFUSED = "554 5.6.0 message refused"


def smtp_extra(port: int) -> str:
    return f'concurrency = 1\n[mail.smtp]\nhost = "127.0.0.1"\nport = {port}\nsecurity = "none"\n'


async def healthz(path: Path, now: datetime) -> tuple[int, dict[str, Any]]:
    """GET /healthz of a daemon over this config whose clock says ``now`` (not started:
    the web app and its backend are the daemon's own)."""
    daemon = Daemon(load_config(path), clock=at(now))
    try:
        transport = httpx.ASGITransport(app=daemon.asgi)
        async with httpx.AsyncClient(transport=transport, base_url="http://daemon") as client:
            response = await client.get("/healthz")
        return response.status_code, response.json()
    finally:
        daemon.core.close()


# -- run --once exit status and the health verdict ------------------------------------------
def test_run_once_fails_when_every_digest_fails_and_healthz_says_why(
    write_config, smtp_server_factory, capsys: pytest.CaptureFixture[str]
) -> None:
    server = smtp_server_factory(ScriptedHandler({"DATA": [REFUSED] * 3}))
    path = write_config(transport="smtp", mail_extra=smtp_extra(server.port))
    code = main(["-c", str(path), "run", "--once"])
    out, err = capsys.readouterr()
    assert code == 1
    assert "3 failed" in out
    assert "every due digest failed (3 failed, 0 deferred)" in err
    assert server.received == []

    status, body = asyncio.run(healthz(path, datetime.now(UTC)))
    assert status == 200  # degraded is not down: the readers' links still work
    assert body["status"] == "degraded" and body["ok"] is True
    last_run, recent = body["reasons"]
    assert "the last delivery run" in last_run and "3 failed, 0 deferred, none sent" in last_run
    assert recent.startswith("3 digest(s) failed in the last hour") and REFUSED in recent

    assert main(["-c", str(path), "status"]) == 0
    out, _ = capsys.readouterr()
    assert "\nhealth: degraded\n  - the last delivery run (" in out

    # Two hours on, the failures are no longer recent; the last run that tried still failed.
    status, body = asyncio.run(healthz(path, datetime.now(UTC) + timedelta(hours=2)))
    assert (status, body["status"]) == (200, "degraded")
    assert [r.split(" (")[0] for r in body["reasons"]] == ["the last delivery run"]


def test_a_partly_failed_run_exits_zero_and_degrades_for_an_hour(
    write_config, smtp_server_factory, capsys: pytest.CaptureFixture[str]
) -> None:
    server = smtp_server_factory(ScriptedHandler({"DATA": [REFUSED]}))  # the first only
    path = write_config(transport="smtp", mail_extra=smtp_extra(server.port))
    assert main(["-c", str(path), "run", "--once"]) == 0
    out, _ = capsys.readouterr()
    assert "delivered 2 digests, 1 failed" in out

    now = datetime.now(UTC)
    status, body = asyncio.run(healthz(path, now))
    assert (status, body["status"]) == (200, "degraded")
    [reason] = body["reasons"]
    assert reason.startswith("1 digest(s) failed in the last hour")

    status, body = asyncio.run(healthz(path, now + timedelta(minutes=61)))
    assert (status, body["status"], body["reasons"]) == (200, "ok", [])


async def test_a_run_with_nothing_due_does_not_hide_a_failed_run(
    write_config, smtp_server_factory
) -> None:
    server = smtp_server_factory(ScriptedHandler({"DATA": [REFUSED] * 3}))
    path = write_config(transport="smtp", mail_extra=smtp_extra(server.port))
    with App(load_config(path), clock=at(NOW)) as app:
        first = await app.run_once()
        assert (first.deliver.sent, first.deliver.failed) == (0, 3)
    later = NOW + timedelta(hours=2)
    with App(load_config(path), clock=at(later)) as app:
        again = await app.run_once()  # nothing new is due: tries nothing
        assert (again.deliver.sent, again.deliver.failed) == (0, 0)
        verdict = app.health()
    assert verdict.status == "degraded"
    assert [r.split(" (")[0] for r in verdict.reasons] == ["the last delivery run"]


async def test_a_source_failing_for_a_day_degrades_health(write_config, tmp_path: Path) -> None:
    listing = tmp_path / "listing.rss"
    shutil.copy(SAMPLES / "daily-papers-001.rss", listing)
    sources = f'\n[[sources]]\nname = "lab-feed"\nkind = "feed"\nurl = "{listing}"\n'
    path = write_config(sources=sources)
    with App(load_config(path), clock=at(NOW)) as app:
        app.sync()
        [ok] = await app.ingest()
        assert ok.ok
    listing.unlink()
    for hours, expected in ((1, "ok"), (23, "ok"), (25, "degraded")):
        with App(load_config(path), clock=at(NOW + timedelta(hours=hours))) as app:
            [failed] = await app.ingest()
            assert not failed.ok
        status, body = await healthz(path, NOW + timedelta(hours=hours))
        assert (status, body["status"]) == (200, expected), hours
    [reason] = body["reasons"]
    assert reason.startswith("source lab-feed has been failing for 25 h (3 failures in a row)")


def test_a_source_that_never_worked_counts_its_failures_at_its_interval() -> None:
    from pipeline.cycle.health import assess
    from pipeline.store import SourceState

    def verdict(failures: int) -> str:
        state = SourceState("new", consecutive_failures=failures, last_error="404")
        return assess(
            runs=[], sources=[state], intervals={"new": timedelta(hours=1)}, failed=[], now=NOW
        ).status

    assert verdict(24) == "ok"  # the first failure and 23 hourly retries: 23 h
    assert verdict(25) == "degraded"


# -- progress -------------------------------------------------------------------------------
def test_run_once_and_import_print_plain_progress_lines_when_not_a_terminal(
    write_config, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config()
    assert main(["-c", str(path), "run", "--once"]) == 0
    out, _ = capsys.readouterr()
    lines = out.splitlines()
    assert "fetching sources: started (0/4)" in lines
    assert "fetching sources: 4/4 (100 %)" in lines
    assert any(line.startswith("planning due digests: done, 3 planned for 3") for line in lines)
    assert "sending digests: done, 3 sent" in lines
    assert "\x1b[" not in out  # no terminal control sequences in a log or a pipe

    readers = tmp_path / "readers.csv"
    readers.write_text(
        "email,timezone\n" + "".join(f"r{i}@lab.example,UTC\n" for i in range(30)),
        encoding="utf-8",
    )
    assert main(["-c", str(path), "subscribers", "import", str(readers)]) == 0
    out, _ = capsys.readouterr()
    assert "validating readers.csv: done, 30 valid records" in out
    assert "importing readers: 30/30 (100 %)" in out
    assert "importing readers: done, 30 added, 0 updated" in out
    assert "30 added, 0 updated, 0 skipped" in out


def test_plain_lines_come_at_each_tenth_not_each_unit() -> None:
    out = io.StringIO()
    progress = LineProgress(out)
    progress.start("deliver", "sending digests", 1000)
    for _ in range(1000):
        progress.advance("deliver")
    progress.finish("deliver", "1000 sent")
    lines = out.getvalue().splitlines()
    assert len(lines) == 12  # started, ten tenths, done
    assert lines[1] == "sending digests: 100/1000 (10 %)"
    assert lines[-1] == "sending digests: done, 1000 sent"


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_live_bars() -> None:
    out = FakeTerminal()
    progress = progress_for(out)
    assert isinstance(progress, TerminalProgress)
    with progress:
        progress.start("deliver", "sending digests", 3)
        progress.advance("deliver", 3)
        progress.finish("deliver", "3 sent")
    drawn = out.getvalue()
    assert "sending digests" in drawn and "3/3" in drawn and "3 sent" in drawn
    assert isinstance(progress_for(io.StringIO()), LineProgress)


# -- PostgreSQL without the [postgres] extra --------------------------------------------------
def test_postgresql_without_its_driver_is_one_clear_line(
    write_config, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without the extra, ``import psycopg`` fails deep inside SQLAlchemy: ``status`` says
    what to install in one line (no traceback), and ``check`` fails naming the key."""
    monkeypatch.setitem(sys.modules, "psycopg", None)  # what an install without it looks like
    path = write_config(db_url="postgresql+psycopg://paperpost@127.0.0.1:5432/paperpost")
    assert main(["-c", str(path), "status"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        "paperpost: error: database.url is a postgresql+psycopg:// URL, but its driver "
        "(Python module 'psycopg') is not installed: pip install 'paperpost[postgres]' "
        "(README: Using PostgreSQL)"
    ]
    assert main(["-c", str(path), "check"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert f"{path}:3: database.url: " in err and "paperpost[postgres]" in err


def test_a_bare_postgresql_url_without_a_driver_is_one_line_too(
    write_config, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``postgresql://`` means psycopg2 to SQLAlchemy 2.0 and psycopg to 2.1."""
    monkeypatch.setitem(sys.modules, "psycopg", None)
    monkeypatch.setitem(sys.modules, "psycopg2", None)
    path = write_config(db_url="postgresql://paperpost@127.0.0.1:5432/paperpost")
    for command in ("status", "check"):
        assert main(["-c", str(path), command]) == 1
        _, err = capsys.readouterr()
        assert "Traceback" not in err and "paperpost[postgres]" in err
        assert "is a postgresql:// URL, but its driver (Python module 'psycopg" in err
