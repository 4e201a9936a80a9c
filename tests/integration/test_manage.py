"""The reader's manage page over HTTP with the real application layer and store: edits
(overrides for a config reader), pause, undo of presses, export, erasure, resubscribe."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from urllib.parse import quote

import pytest

from pipeline.store import PlannedDelivery
from pipeline.web.subscribe import manage_path
from tests.integration.test_subscribe import Site, site_factory  # noqa: F401  (a fixture)

ADA = "ada@lab.example"


@pytest.fixture
async def web(site_factory) -> AsyncIterator[Site]:  # type: ignore[no-untyped-def]  # noqa: F811
    made = await site_factory()
    yield made
    await made.client.aclose()


FORM = {
    "action": "save",
    "categories": ["cs.CL", "cs.LG"],
    "about": "language models <b>bold</b>",
    "frequency": "weekly:fri",
    "send_at": "06:15",
    "timezone": "America/Chicago",
}


def page_of(web: Site, address: str = ADA) -> str:
    """The manage link of the confirmation page (a reader token); one naming a reader id
    that no one has for an address not in the database."""
    reader = web.app.store.reader_by_email(address)
    return manage_path(web.app.signer(), reader.id if reader else 999_999, now=web.clock())


async def test_get_shows_the_settings_escaped_and_changes_nothing(web: Site) -> None:
    before = web.app.reader(ADA)
    response = await web.client.get(page_of(web) + "?action=erase&sure=1")
    assert response.status_code == 200
    assert "language models &lt;b&gt;bold&lt;/b&gt;" in response.text
    assert "<b>bold</b>" not in response.text
    assert 'id="operator-note"' in response.text  # a config reader is told whose edits win
    assert web.app.reader(ADA) == before


async def test_a_config_readers_edit_is_an_override_that_the_page_marks(web: Site) -> None:
    before = web.app.reader(ADA)
    response = await web.client.post(page_of(web), data=FORM)
    assert response.status_code == 200 and "Your settings are saved." in response.text
    after = web.app.reader(ADA)
    assert after.version == before.version + 1
    assert after.subscriber.schedule.frequency == "weekly:fri"
    assert after.subscriber.profile.categories == ("cs.CL", "cs.LG")
    record = web.app.store.reader_record(ADA)
    assert record is not None
    assert sorted(record.overrides) == ["categories", "frequency", "send_at", "timezone"]
    assert response.text.count("(your change)") == 4
    # The operator's next sync keeps them; resetting brings the file's values back.
    web.app.sync()
    assert web.app.reader(ADA).subscriber.schedule.timezone == "America/Chicago"
    reset = await web.client.post(page_of(web), data={"action": "reset"})
    assert reset.status_code == 200
    assert web.app.reader(ADA).subscriber.schedule.timezone == "UTC"


async def test_bad_preferences_are_refused_and_nothing_changes(web: Site) -> None:
    before = web.app.reader(ADA)
    response = await web.client.post(page_of(web), data=FORM | {"timezone": "Nowhere/<x>"})
    assert response.status_code == 400 and "Time zone:" in response.text
    assert "Nowhere/<x>" not in response.text
    assert web.app.reader(ADA) == before


async def test_pause_resume_and_undo_a_press(web: Site) -> None:
    response = await web.client.post(page_of(web), data={"action": "pause", "weeks": "3"})
    assert response.status_code == 200 and 'id="paused"' in response.text
    reader = web.app.reader(ADA)
    assert web.app.store.active_schedules(now=web.clock()) == {}
    too_long = await web.client.post(page_of(web), data={"action": "pause", "weeks": "99"})
    assert too_long.status_code == 400
    await web.client.post(page_of(web), data={"action": "resume"})
    assert list(web.app.store.active_schedules(now=web.clock())) == [reader.id]

    web.app.record_feedback(ADA, "2401.00001", "less", now=web.clock())
    shown = await web.client.get(page_of(web))
    assert "Less like" in shown.text and "2401.00001" in shown.text
    await web.client.post(page_of(web), data={"action": "undo", "paper": "2401.00001"})
    assert web.app.store.feedback([reader.id])[reader.id] == ([], [])


async def test_export_and_erasure(web: Site) -> None:
    web.app.record_feedback(ADA, "2401.00001", "more", now=web.clock())
    export = await web.client.post(page_of(web), data={"action": "export"})
    assert export.status_code == 200
    assert export.headers["content-type"].startswith("application/json")
    assert "attachment" in export.headers["content-disposition"]
    data = json.loads(export.text)
    assert data["email"] == ADA and data["feedback"][0]["paper"] == "2401.00001"

    unsure = await web.client.post(page_of(web), data={"action": "erase"})
    assert unsure.status_code == 400 and web.status(ADA) == "active"
    gone = await web.client.post(page_of(web), data={"action": "erase", "sure": "1"})
    assert gone.status_code == 200 and "Your data is deleted" in gone.text
    assert web.status(ADA) is None
    assert (await web.client.get(page_of(web))).status_code == 410
    web.app.sync()  # the operator's file still lists Ada: she stays erased
    assert web.status(ADA) is None


async def test_the_unsubscribed_page_leads_to_resubscribing(web: Site) -> None:
    ada = web.app.reader(ADA).id
    [row] = web.app.store.plan_deliveries(  # a digest Ada received: its token unsubscribes
        [PlannedDelivery(ada, "d1", web.clock(), web.clock(), "<d1@lab.example>", [], False)],
        now=web.clock(),
    )
    assert row is not None
    token = web.app.signer().digest_token(subscriber_id=ada, delivery_id=row, now=web.clock())
    page = await web.client.post(f"/unsubscribe/{quote(token, safe='')}")
    assert "Ask the sender" not in page.text
    link = re.search(r'id="manage" href="([^"]+)"', page.text)
    assert link and web.status(ADA) == "unsubscribed"
    manage = await web.client.get(link.group(1))
    assert 'id="resubscribe"' in manage.text
    back = await web.client.post(link.group(1), data={"action": "resubscribe"})
    assert back.status_code == 200 and web.status(ADA) == "active"


@pytest.mark.parametrize(("kind", "may_return"), [("unsubscribe", True), ("hard", False)])
async def test_a_suppressed_reader_may_return_only_from_their_own_request(
    web: Site, kind: str, may_return: bool
) -> None:
    """A mail to the unsubscribe address suppresses, and the manage page lifts it; a hard
    bounce suppresses for good and the page offers nothing."""
    web.app.store.record_bounce_event(
        address=ADA,
        kind=kind,
        detail="test",
        report_id=f"<{kind}@lab.example>",
        delivery_id=None,
        received_at=web.clock(),
        soft_limit=3,
        soft_days=7,
        now=web.clock(),
    )
    assert web.status(ADA) == "suppressed"
    page = await web.client.get(page_of(web))
    assert ('id="resubscribe"' in page.text) is may_return
    back = await web.client.post(page_of(web), data={"action": "resubscribe"})
    assert web.status(ADA) == ("active" if may_return else "suppressed"), back.text
    assert (web.app.store.suppression(ADA) is None) is may_return


async def test_bad_and_foreign_tokens(web: Site) -> None:
    assert (await web.client.get("/manage/not-a-token")).status_code == 400
    confirm = web.app.signer().reader_token(
        subscriber_id=web.app.reader(ADA).id, purpose="confirm", nonce="n", now=web.clock()
    )
    assert (await web.client.get(f"/manage/{confirm}")).status_code == 400  # wrong purpose
    unknown = await web.client.get(page_of(web, "nobody@lab.example"))
    assert unknown.status_code == 410
