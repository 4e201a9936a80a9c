"""What many test files shared word for word: the instants they run at, a stopped clock, the
secret and base URL of the conftest config, and the SMTP table for a loopback server.

Files import an instant under the name they use (``from tests.factories import MONDAY_NOON as
NOW``). An instant that means something to one file alone (a listing's own date, a DST edge,
the day a fixture's papers were announced) stays in that file.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.smtpd import RunningServer

TESTS = Path(__file__).resolve().parent
BOUNCE_REPORTS = TESTS / "data" / "bounces"  # real delivery status and abuse reports

# -- instants --------------------------------------------------------------------------------
MONDAY_NOON = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
"""A Monday, noon UTC, after the sample listings: the clock of a cycle (App, run_once, the
daemon, the runner)."""

MONDAY_8AM = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
"""A Monday, 08:00 UTC: "now" of the store, claim and outbox tests."""

MONDAY_7AM = datetime(2026, 11, 23, 7, 0, tzinfo=UTC)
"""A Monday, 07:00 UTC: when the rendered test digest was made, announced and dated."""

SUNDAY_MIDNIGHT = datetime(2026, 11, 22, tzinfo=UTC)
"""Sunday 00:00 UTC: "now" of the feed, Hugging Face, normalise and XML-safety parser tests."""

SUNDAY_NOON = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
"""Sunday noon UTC: "now" of the arXiv parser and of the sources-due tests."""

# -- the conftest config ----------------------------------------------------------------------
SECRET = "test-secret-0123456789abcdef"  # what conftest's secret_env puts in the environment
BASE_URL = "https://digest.paperpost.example"  # the [web] base_url of conftest's config


def at(moment: datetime) -> Callable[[], datetime]:
    """A clock stopped at ``moment`` (the ``clock=`` of App, run_once and Daemon)."""
    return lambda: moment


def smtp_extra(server: RunningServer) -> str:
    """The ``[mail.smtp]`` table for a test server on loopback (no TLS, no AUTH)."""
    return f'\n[mail.smtp]\nhost = "127.0.0.1"\nport = {server.port}\nsecurity = "none"\n'
