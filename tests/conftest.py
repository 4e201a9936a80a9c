"""Shared fixtures: real databases (SQLite in tmp_path, PostgreSQL on 127.0.0.1 in a schema of
its own per test) and a config-file builder."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.factories import SECRET
from tests.pgschema import PG_BASE, fresh_schema

if TYPE_CHECKING:
    from pipeline.store import Store

ROOT = Path(__file__).resolve().parent.parent

pytest_plugins = ["tests.conftest_smtp"] if (ROOT / "tests" / "conftest_smtp.py").exists() else []


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def require_service(name: str, host: str, port: int) -> None:
    """Skip when the service is down, unless CI made it mandatory (then fail loudly)."""
    if _reachable(host, port):
        return
    reason = f"{name} is not reachable on {host}:{port}"
    if os.environ.get(f"PAPERPOST_REQUIRE_{name.upper()}"):
        pytest.fail(f"{reason}, and PAPERPOST_REQUIRE_{name.upper()} is set")
    pytest.skip(reason)


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh schema, dropped afterwards."""
    require_service("postgres", "127.0.0.1", 5432)
    with fresh_schema(PG_BASE) as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same tests against both databases."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'paperpost.db'}"
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    """A Store on ``db_url`` (so on each database), migrated, closed afterwards. Files that
    need another store (a memory one, readers synced first) define their own ``store``."""
    from pipeline.store import Store

    s = Store.open(db_url, auto_upgrade=True)
    yield s
    s.close()


SAMPLES = ROOT / "config" / "samples"

BASE_CONFIG = """
[database]
url = "{db_url}"

[mail]
from = "Paperpost test <digest@paperpost.example>"
transport = "{transport}"
list_name = "Paperpost test"
unsubscribe_mailto = "unsubscribe@paperpost.example"
{mail_extra}

[mail.maildir]
path = "{tmp}/maildir"

[web]
base_url = "https://digest.paperpost.example"
secret_env = "PAPERPOST_TEST_SECRET"

[render]
preview_dir = "{tmp}/previews"
"""

SAMPLE_SOURCES = "".join(
    f'\n[[sources]]\nname = "{name}"\nkind = "{kind}"\nurl = "{SAMPLES / file}"\n'
    for name, kind, file in [
        ("daily-papers-001", "feed", "daily-papers-001.rss"),
        ("daily-papers-004", "feed", "daily-papers-004.rss"),
        ("arxiv-api-testing", "arxiv-api", "arxiv-api-search-testing.xml"),
        ("hf-daily", "hf-daily", "hf-daily-2026-07-31.json"),
    ]
)

SUBSCRIBERS = """
[[subscribers]]
email = "ada@lab.example"
name = "Ada Lovelace"
timezone = "Europe/London"
send_at = "00:00"
[subscribers.interests]
query = 'abs:RLHF OR ti:"preference optimization" OR abs:"reward model"'

[[subscribers]]
email = "grace@lab.example"
name = "Grace"
timezone = "Asia/Tokyo"
send_at = "00:00"
[subscribers.interests]
query = 'abs:(quantization OR pruning) OR ti:efficient'

[[subscribers]]
email = "zoe@lab.example"
name = "Zoë"
timezone = "Pacific/Auckland"
send_at = "00:00"
trending = 3
[subscribers.interests]
query = 'ti:agent* OR abs:"tool use"'
"""


@pytest.fixture
def secret_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAPERPOST_TEST_SECRET", SECRET)


ConfigFactory = Callable[..., Path]


@pytest.fixture
def write_config(tmp_path: Path, secret_env: None) -> ConfigFactory:
    """Write a config file into tmp_path: sample sources, three subscribers, given transport."""

    def factory(
        *,
        db_url: str | None = None,
        transport: str = "maildir",
        mail_extra: str = "",
        sources: str = SAMPLE_SOURCES,
        subscribers: str = SUBSCRIBERS,
        extra: str = "",
        name: str = "paperpost.toml",
    ) -> Path:
        text = BASE_CONFIG.format(
            db_url=db_url or f"sqlite:///{tmp_path / 'paperpost.db'}",
            transport=transport,
            mail_extra=mail_extra,
            tmp=tmp_path,
        )
        path = tmp_path / name
        path.write_text(text + extra + sources + subscribers, encoding="utf-8")
        return path

    return factory


# -- how long each tier took (the README quotes these) ------------------------------------------
_TIER_SECONDS: dict[str, float] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Add each test's setup, call and teardown time to its tier (tests/<tier>/...)."""
    parts = report.nodeid.split("/")
    tier = parts[1] if len(parts) > 2 and parts[0] == "tests" else "other"
    _TIER_SECONDS[tier] = _TIER_SECONDS.get(tier, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _TIER_SECONDS:
        tiers = sorted(_TIER_SECONDS.items())
        times = ", ".join(f"{tier} {seconds:.0f} s" for tier, seconds in tiers)
        terminalreporter.write_line(f"time per tier (sum of test durations): {times}")
