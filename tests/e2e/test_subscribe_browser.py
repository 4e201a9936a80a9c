"""A new reader's whole way in, in headless Chromium (Debian's `chromium`) against a running
daemon: fill in the subscribe form (the time zone guessed by the browser), receive the one
confirmation at a real SMTP server, confirm on the link's page, edit the settings on the
manage page (schedule and interests), and find the edit in the next digest sent to the same
server: its footer names the new schedule, its papers follow the new interests."""

from __future__ import annotations

import asyncio
import re
import signal
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from pipeline.app import App
from pipeline.config import load_config
from pipeline.store import Store
from tests.daemon_harness import (
    ENV,
    SAMPLE_SOURCES,
    SUBSCRIBERS,
    CountingHandler,
    DaemonProcess,
    write_daemon_config,
)
from tests.e2e.test_daemon import link_path, message_to
from tests.e2e.test_web_browser import browser  # noqa: F401  (the Chromium fixture)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

NEW = "newbie@lab.example"
# One dispatch at start (the config's three readers), then none for an hour: whatever the
# new reader receives afterwards comes from the run below, after the edit.
QUIET = "\n[schedule]\ndispatch_every_seconds = 3600\n"
# The interests, in the sample sources (config/samples): at sign-up cs.CL + cs.LG and an
# about text, which bring the two cs.LG papers of the arXiv API sample and a title close to
# the about text; after the edit cs.HC (one paper) and a title query (another), no about text.
OLD_ONLY = {"2202.12139": "cs.LG", "2005.14124": "cs.LG"}  # arXiv id: the old category
OLD_SIMILAR = "3D-GPT: Procedural 3D Modeling"  # admitted by the about text alone
NEW_QUERY = 'ti:"REST APIs"'
NEW_PAPERS = {  # arXiv id: why the digest must say it is there
    "2302.03287": "Why: in cs.HC",
    "2204.08348": f"Why: matched {NEW_QUERY}",
}


def test_subscribe_confirm_manage_and_the_next_digest_in_chromium(
    tmp_path: Path,
    smtp_server_factory: Callable[..., object],
    browser: object,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    handler = CountingHandler()
    server = smtp_server_factory(handler)
    db_url = f"sqlite:///{tmp_path / 'paperpost.db'}"
    config, port = write_daemon_config(
        tmp_path / "a",
        db_url=db_url,
        smtp_port=server.port,  # type: ignore[attr-defined]
        sources=SAMPLE_SOURCES,
        subscribers=SUBSCRIBERS + QUIET,
    )
    daemon = DaemonProcess(config)
    base = f"http://127.0.0.1:{port}"
    try:
        daemon.wait_for("started: web on")
        daemon.wait_for("3 sent")
        sent_before = len(handler.received)
        context = browser.new_context(timezone_id="Europe/Paris")  # type: ignore[attr-defined]
        page = context.new_page()

        response = page.goto(base + "/subscribe")
        assert response.status == 200
        assert page.input_value("#timezone") == "Europe/Paris"  # Intl's guess, through the CSP
        page.fill("#email", NEW)
        page.check("#cat-cs\\.CL")
        page.check("#cat-cs\\.LG")
        page.fill("#about", "language models and agents")
        page.select_option("#frequency", "weekly:mon")
        page.fill("#send_at", "07:30")
        with page.expect_navigation():
            page.click("#subscribe")
        assert page.locator("h1").inner_text() == "Check your inbox"
        assert _status(db_url, NEW) == "pending"

        assert handler.wait_for(sent_before + 1), daemon.log()
        confirmation = message_to(handler.received, NEW)
        assert "Confirm your subscription" in str(confirmation["Subject"])
        confirm = link_path(confirmation, "confirm")
        page.goto(base + confirm)  # the page only asks
        assert _status(db_url, NEW) == "pending"
        with page.expect_navigation():
            page.click("#confirm")
        assert page.locator("h1").inner_text() == "You are subscribed"
        assert _status(db_url, NEW) == "active"
        assert context.cookies() == []

        with page.expect_navigation():
            page.click("#manage")
        assert page.input_value("#timezone") == "Europe/Paris"  # as stored, not re-guessed
        page.select_option("#frequency", "daily")
        page.fill("#send_at", "00:05")
        page.fill("#timezone", "Asia/Tokyo")
        assert page.is_checked("#cat-cs\\.CL") and page.is_checked("#cat-cs\\.LG")
        page.uncheck("#cat-cs\\.CL")
        page.uncheck("#cat-cs\\.LG")
        page.check("#cat-cs\\.HC")
        page.fill("#about", "")
        page.fill("#query", NEW_QUERY)
        with page.expect_navigation():
            page.click("#save")
        assert page.locator("#notice").inner_text() == "Your settings are saved."
        ticked = page.eval_on_selector_all(
            "input[name=categories]:checked", "boxes => boxes.map(b => b.value)"
        )
        assert ticked == ["cs.HC"]  # as saved, shown again
        assert page.input_value("#query") == NEW_QUERY and page.input_value("#about") == ""
        context.close()
    finally:
        daemon.send(signal.SIGTERM)
        assert daemon.wait() == 0, daemon.log()
    assert len(handler.received) == sent_before + 1  # the confirmation, and no digest yet

    # The next digest, sent by one run of the same config to the same server.
    for key, value in ENV.items():
        if key.startswith("PAPERPOST_"):
            monkeypatch.setenv(key, value)
    # (In a thread of its own: Playwright's sync API keeps an event loop in this one.)
    with App(load_config(config)) as app, ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, app.run_once()).result()
    digest = message_to(handler.received[sent_before + 1 :], NEW)
    text = " ".join(_text(digest).split())
    assert f"{NEW} is subscribed to Paperpost test, daily at 00:05 Asia/Tokyo" in text
    assert link_path(digest, "manage")  # every digest links to the manage page

    # The papers follow the edited interests: each item names its arXiv abstract and why.
    shown = re.findall(r"Abstract: https://arxiv\.org/abs/(\S+)", text)
    assert sorted(shown) == sorted(NEW_PAPERS), text
    assert text.count("Why: ") == len(NEW_PAPERS), text  # no paper without an arXiv id
    assert text.startswith(f"Paperpost test: {len(NEW_PAPERS)} new papers for ")  # headline
    for why in NEW_PAPERS.values():
        assert why in text
    assert "close to your about text" not in text and OLD_SIMILAR not in text
    # The sign-up interests' papers are in the store, so their absence is the edit's doing.
    store = Store.open(db_url)
    try:
        old = store.papers_by_id(OLD_ONLY)
    finally:
        store.close()
    assert all(category in old[i].categories for i, category in OLD_ONLY.items()), old
    assert not set(OLD_ONLY) & set(shown)


def _text(message: object) -> str:
    for part in message.walk():  # type: ignore[attr-defined]
        if part.get_content_type() == "text/plain":
            payload = part.get_payload(decode=True)
            return str(payload.decode(part.get_content_charset() or "utf-8"))
    raise AssertionError("no text part")


def _status(db_url: str, address: str) -> str | None:
    store = Store.open(db_url)
    try:
        state = store.subscriber_state(address)
        return state.status if state else None
    finally:
        store.close()
