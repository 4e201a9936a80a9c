"""The soak's short profile (bench/soak.py, docs/soak.md): three simulated days of the real
daemon under every kind of fault, with issue 18's invariants checked after every day.

SQLite with the embedded runner always; PostgreSQL with ``runner = "procrastinate"`` and two
``paperpost worker`` processes when the server is reachable. The seed is fixed (override it
with ``PAPERPOST_SOAK_SEED``); on failure the assertion names the report (seed, fault
schedule, per-day ledger) in tmp_path and the command that replays the run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bench.soak import FAULT_KINDS, MAILDIR_FULL, PG_ONLY, Result, run_soak, tmpfs_available
from tests.conftest import require_service

SEED = int(os.environ.get("PAPERPOST_SOAK_SEED", "1"))

pytestmark = pytest.mark.slow


def _held(result: Result, report: Path, kinds: set[str]) -> None:
    replay = json.loads(report.read_text(encoding="utf-8"))["replay"]
    where = f"report {report}; replay with: {replay}"
    # Every kind of fault was injected, and the invariants looked at real traffic.
    assert set(result.faults) == kinds, (sorted(kinds - set(result.faults)), where)
    assert result.checked["due periods"] > result.readers, where
    assert result.checked["digests at the server"] > result.readers, where
    assert result.checked["papers received"] > 0, where
    assert result.checked["feedback presses"] > 0, where
    assert result.max_rss_mb.get("daemon", 0) > 0, where
    assert result.invariants_held, (
        "\n".join(f"invariant {v.invariant}: {v.what}" for v in result.violations[:30])
        + "\n"
        + where
    )
    assert len(result.ledger) >= result.days, where


def test_short_soak_sqlite_embedded(tmp_path: Path) -> None:
    result, report = run_soak(profile="short", db="sqlite", seed=SEED, directory=tmp_path / "soak")
    maildir = {MAILDIR_FULL} if tmpfs_available() else set()  # root and tmpfs only
    _held(result, report, set(FAULT_KINDS) - PG_ONLY | maildir)
    if maildir:
        assert result.checked["maildir messages"] > 0


def test_short_soak_postgresql_procrastinate_two_workers(tmp_path: Path) -> None:
    require_service("postgres", "127.0.0.1", 5432)
    result, report = run_soak(
        profile="short", db="postgresql", seed=SEED, directory=tmp_path / "soak"
    )
    _held(result, report, set(FAULT_KINDS))
    assert result.max_rss_mb.get("worker", 0) > 0
