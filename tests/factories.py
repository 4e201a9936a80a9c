"""What many test files shared word for word: the instants they run at, a stopped clock, the
secret and base URL of the conftest config, and the SMTP table for a loopback server.

Files import an instant under the name they use (``from tests.factories import MONDAY_NOON as
NOW``). An instant that means something to one file alone (a listing's own date, a DST edge,
the day a fixture's papers were announced) stays in that file.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

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

# -- digests -----------------------------------------------------------------------------------
# Every header a digest carries, in the order it is written, each once (docs/email.md,
# "Messages").
DIGEST_HEADERS = (
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "MIME-Version",
    "List-Id",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "Auto-Submitted",
    "Content-Type",
)


def plan_row(
    outbox: Any,
    sid: int,
    key: str,
    papers: list[str],
    *,
    now: datetime = MONDAY_8AM,
    skip_if_empty: bool = False,
) -> int | None:
    """One outbox row (through a store or any ``Outbox``) for reader ``sid``'s period
    ``key``, holding ``papers`` in order, over the day that ends at ``now``."""
    from pipeline.store import PlannedItem

    return outbox.plan_delivery(  # type: ignore[no-any-return]
        subscriber_id=sid,
        period_key=key,
        window_start=now - timedelta(days=1),
        window_end=now,
        message_id=f"<{sid}.{key}@paperpost.test>",
        items=[PlannedItem(p, 1.0 - i / 10, f"reason {p}") for i, p in enumerate(papers)],
        now=now,
        subscriber_version=1,
        skip_if_empty=skip_if_empty,
    )


# -- the conftest config ----------------------------------------------------------------------
SECRET = "test-secret-0123456789abcdef"  # what conftest's secret_env puts in the environment
BASE_URL = "https://digest.paperpost.example"  # the [web] base_url of conftest's config


def at(moment: datetime) -> Callable[[], datetime]:
    """A clock stopped at ``moment`` (the ``clock=`` of App, run_once and Daemon)."""
    return lambda: moment


def smtp_extra(server: RunningServer) -> str:
    """The ``[mail.smtp]`` table for a test server on loopback (no TLS, no AUTH)."""
    return f'\n[mail.smtp]\nhost = "127.0.0.1"\nport = {server.port}\nsecurity = "none"\n'
