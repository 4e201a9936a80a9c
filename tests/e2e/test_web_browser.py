"""The reader's flows in headless Chromium (Debian's `chromium`) against a running daemon:
open the unsubscribe link and a feedback link from a delivered digest; each page only asks,
and pressing its button is what changes the database."""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pipeline.store import Store
from tests.daemon_harness import (
    CountingHandler,
    DaemonProcess,
    sample_daemon_config,
)
from tests.e2e.test_daemon import link_path, message_to

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture
def browser() -> Iterator[object]:
    reason = None
    if CHROMIUM is None:
        reason = "Debian's chromium package is not installed"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        reason = reason or "the playwright package is not installed"
    if reason:
        if os.environ.get("PAPERPOST_REQUIRE_BROWSER"):
            pytest.fail(f"{reason}, and PAPERPOST_REQUIRE_BROWSER is set")
        pytest.skip(reason)
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield chromium
        finally:
            chromium.close()


def test_unsubscribe_and_feedback_flows_in_chromium(
    tmp_path: Path, smtp_server_factory: Callable[..., object], browser: object
) -> None:
    handler = CountingHandler()
    server = smtp_server_factory(handler)
    config, port, db_url = sample_daemon_config(tmp_path, server.port)  # type: ignore[attr-defined]
    daemon = DaemonProcess(config)
    try:
        daemon.wait_for("started: web on")
        assert handler.wait_for(3), daemon.log()
        daemon.wait_for("3 sent")
        base = f"http://127.0.0.1:{port}"
        ada = message_to(handler.received, "ada@lab.example")
        grace = message_to(handler.received, "grace@lab.example")

        context = browser.new_context()  # type: ignore[attr-defined]
        page = context.new_page()
        # Unsubscribe: the GET page asks, changes nothing; the button POSTs one-click.
        response = page.goto(base + link_path(ada, "unsubscribe"))
        assert response.status == 200
        assert "Unsubscribe from Paperpost test?" in page.title()
        assert _status(db_url, "ada@lab.example") == "active"
        with page.expect_navigation():
            page.click("#unsubscribe")
        assert page.locator("h1").inner_text() == "You are unsubscribed"
        assert "ada@lab.example" in page.locator("main").inner_text()
        assert page.url == base + link_path(ada, "unsubscribe")  # 200, no redirect
        assert context.cookies() == []
        assert _status(db_url, "ada@lab.example") == "unsubscribed"

        # Feedback: "more like this" from Grace's digest asks first (link scanners fetch
        # it too); the button POSTs to the same URL and that records.
        feedback = link_path(grace, "feedback")
        response = page.goto(base + feedback)
        assert response.status == 200
        assert page.title().startswith("More papers like ")
        assert _feedback(db_url, "grace@lab.example") == ([], [])
        with page.expect_navigation():
            page.click("#feedback")
        assert page.locator("h1").inner_text() == "Thanks, noted"
        assert page.url == base + feedback
        assert context.cookies() == []
        liked, disliked = _feedback(db_url, "grace@lab.example")
        assert len(liked) == 1 and disliked == []
        thanks = page.locator("main").inner_text()
        assert _title(db_url, liked[0]) in thanks  # the paper by its title,
        assert liked[0] not in thanks  # never by an internal id

        # A tampered link: the uniform page, nothing changed.
        response = page.goto(base + feedback[:-3] + "xyz")
        assert response.status == 400
        assert page.locator("h1").inner_text() == "This link is not valid"
        context.close()
    finally:
        daemon.send(signal.SIGTERM)
        assert daemon.wait() == 0, daemon.log()


def _status(db_url: str, address: str) -> str:
    store = Store.open(db_url)
    try:
        state = store.subscriber_state(address)
        assert state is not None
        return state.status
    finally:
        store.close()


def _title(db_url: str, paper_id: str) -> str:
    store = Store.open(db_url)
    try:
        return store.papers_by_id([paper_id])[paper_id].title
    finally:
        store.close()


def _feedback(db_url: str, address: str) -> tuple[list[str], list[str]]:
    store = Store.open(db_url)
    try:
        state = store.subscriber_state(address)
        assert state is not None
        return store.feedback([state.id])[state.id]
    finally:
        store.close()
