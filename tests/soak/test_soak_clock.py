"""The simulated clock (``[testing] clock_file``, pipeline/clock.py): refused in production
mode, read from its file, re-read only when the file changes."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.clock import ClockFileError, FileClock, config_clock, parse_instant, write_instant
from pipeline.config import load_config
from pipeline.errors import ConfigError
from tests.conftest import ConfigFactory

T0 = datetime(2026, 3, 27, 23, 0, tzinfo=UTC)


def _clock_config(write_config: ConfigFactory, tmp_path: Path) -> Path:
    write_instant(tmp_path / "clock", T0)
    return write_config(extra='\n[testing]\nclock_file = "clock"\n')


def test_clock_file_is_refused_without_the_testing_environment(
    write_config: ConfigFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PAPERPOST_TESTING", raising=False)
    path = _clock_config(write_config, tmp_path)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    text = str(err.value)
    assert "testing.clock_file" in text
    assert "refused in production mode" in text
    assert "PAPERPOST_TESTING=1" in text


def test_clock_file_is_refused_when_testing_is_not_exactly_1(
    write_config: ConfigFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PAPERPOST_TESTING", "yes")
    with pytest.raises(ConfigError, match=r"testing\.clock_file"):
        load_config(_clock_config(write_config, tmp_path))


def test_paperpost_check_names_the_key(
    write_config: ConfigFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("PAPERPOST_TESTING", raising=False)
    path = _clock_config(write_config, tmp_path)
    assert main(["-c", str(path), "check"]) == 1
    err = capsys.readouterr().err
    assert "testing.clock_file" in err and "refused in production mode" in err


def test_start_up_refuses_it_too(
    write_config: ConfigFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PAPERPOST_TESTING", raising=False)
    path = _clock_config(write_config, tmp_path)
    from pipeline.daemon import run_daemon

    with pytest.raises(ConfigError, match=r"testing\.clock_file"):
        run_daemon(path)


def test_the_app_reads_the_time_from_the_file(
    write_config: ConfigFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PAPERPOST_TESTING", "1")
    config = load_config(_clock_config(write_config, tmp_path))
    clock = config_clock(config)
    assert clock is not None
    assert clock() == T0
    write_instant(tmp_path / "clock", T0 + timedelta(minutes=30))
    assert clock() == T0 + timedelta(minutes=30)


def test_without_the_setting_the_system_clock_is_used(
    write_config: ConfigFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PAPERPOST_TESTING", "1")
    assert config_clock(load_config(write_config())) is None


def test_file_is_reread_only_when_it_changed(tmp_path: Path) -> None:
    path = tmp_path / "clock"
    write_instant(path, T0)
    clock = FileClock(path)
    assert clock() == T0
    # Same size, same mtime, same inode: the cached instant stands (the file is not read).
    st = os.stat(path)
    path.write_text((T0 + timedelta(hours=1)).isoformat() + "\n", encoding="utf-8")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(path).st_size == st.st_size
    assert clock() == T0
    # A different mtime: read again.
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert clock() == T0 + timedelta(hours=1)


def test_a_broken_file_keeps_the_last_instant(tmp_path: Path) -> None:
    path = tmp_path / "clock"
    write_instant(path, T0)
    clock = FileClock(path)
    assert clock() == T0
    path.write_text("not a time, and longer than before\n", encoding="utf-8")
    assert clock() == T0
    path.unlink()
    assert clock() == T0


def test_first_read_must_succeed(tmp_path: Path) -> None:
    with pytest.raises(ClockFileError, match="cannot read the clock file"):
        FileClock(tmp_path / "missing")()
    (tmp_path / "naive").write_text("2026-03-28T01:00:00\n", encoding="utf-8")
    with pytest.raises(ClockFileError, match="UTC offset"):
        FileClock(tmp_path / "naive")()


def test_parse_instant_converts_offsets_to_utc() -> None:
    assert parse_instant("2026-03-29T02:30:00+01:00") == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)
    assert parse_instant("2026-03-29T01:30:00Z") == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)
    with pytest.raises(ClockFileError, match="ISO-8601"):
        parse_instant("yesterday")


def test_paperpost_check_accepts_it_in_testing_mode(
    write_config: ConfigFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("PAPERPOST_TESTING", "1")
    path = _clock_config(write_config, tmp_path)
    assert main(["-c", str(path), "check"]) == 0
    assert ": OK" in capsys.readouterr().out


def test_a_missing_clock_file_fails_at_start_up(
    write_config: ConfigFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PAPERPOST_TESTING", "1")
    path = _clock_config(write_config, tmp_path)
    (tmp_path / "clock").unlink()
    with pytest.raises(ClockFileError, match="cannot read the clock file"):
        config_clock(load_config(path))
