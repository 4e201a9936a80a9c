"""The subscribe page and its double opt-in over HTTP, with the real application layer, a
SQLite store and the confirmation mail delivered to a real aiosmtpd server."""

from __future__ import annotations

import email
import email.policy
import re
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from email.message import Message
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest

from pipeline.app import App
from pipeline.config import load_config
from pipeline.errors import ConfigError
from pipeline.web.app import create_app
from pipeline.web.readers import LinkedDigest, ManagedReader, ReaderForm, SubscribeSettings
from pipeline.web.subscribe import check_rate_storage
from tests.conftest import require_service
from tests.factories import SECRET
from tests.smtpd import RunningServer
from tests.web_fakes import FakeClock

CONFIG = """
[database]
url = "sqlite:///{tmp}/paperpost.db"

[mail]
from = "Paperpost test <digest@paperpost.example>"
transport = "smtp"
list_name = "Paperpost test"

[mail.smtp]
host = "127.0.0.1"
port = {smtp_port}
security = "none"

[web]
base_url = "https://digest.paperpost.example"
secret_env = "PAPERPOST_TEST_SECRET"
{web_extra}

[render]
preview_dir = "{tmp}/previews"

[[subscribers]]
email = "ada@lab.example"
[subscribers.interests]
about = "language models <b>bold</b>"
categories = ["cs.CL"]
"""
GOOD = {
    "email": "new@lab.example",
    "categories": ["cs.LG", "stat.ML"],
    "about": "diffusion models",
    "frequency": "weekly:mon",
    "send_at": "07:30",
    "timezone": "Europe/Paris",
}


@dataclass
class AppReaders:
    """The daemon's web backend in miniature: every call goes to the real ``App``."""

    app: App

    def unsubscribe(self, email: str, *, now: datetime) -> bool:
        return self.app.unsubscribe(email, now=now)

    def record_feedback(self, email: str, paper_id: str, signal: str, *, now: datetime) -> bool:
        return self.app.record_feedback(email, paper_id, signal, now=now)

    def reader_email(self, subscriber_id: int) -> str | None:
        return self.app.reader_email(subscriber_id)

    def linked_digest(self, subscriber_id: int, delivery_id: int) -> LinkedDigest | None:
        return self.app.linked_digest(subscriber_id, delivery_id)

    def render_preview(self, email: str) -> str | None:
        return None

    def health(self) -> Mapping[str, object]:
        return {"ok": True}

    def metrics_text(self) -> str:
        return ""

    def request_signup(
        self, email: str, form: ReaderForm, *, now: datetime
    ) -> Callable[[], None] | None:
        return self.app.request_signup(email, form, now=now)

    def confirm_signup(self, email: str, nonce: str, *, now: datetime) -> bool:
        return self.app.confirm_signup(email, nonce, now=now)

    def managed_reader(self, email: str, *, now: datetime) -> ManagedReader | None:
        return self.app.managed_reader(email, now=now)

    def edit_reader(self, email: str, form: ReaderForm, *, now: datetime) -> bool:
        return self.app.edit_reader(email, form, now=now)

    def reset_overrides(self, email: str, *, now: datetime) -> bool:
        return self.app.reset_overrides(email, now=now)

    def pause(self, email: str, weeks: int, *, now: datetime) -> bool:
        return self.app.pause(email, weeks, now=now)

    def undo_feedback(self, email: str, paper_id: str, *, now: datetime) -> bool:
        return self.app.undo_feedback(email, paper_id, now=now)

    def resubscribe(self, email: str, *, now: datetime) -> bool:
        return self.app.resubscribe_reader(email, now=now)

    def export_reader(self, email: str) -> Mapping[str, object] | None:
        return self.app.export_reader(email)

    def erase_reader(self, email: str, *, now: datetime) -> bool:
        return self.app.erase_reader(email, now=now)


@dataclass
class Site:
    app: App
    client: httpx.AsyncClient
    smtp: RunningServer
    clock: FakeClock

    def mails_to(self, address: str) -> list[Message]:
        found = [
            email.message_from_bytes(data, policy=email.policy.default)
            for _, data in self.smtp.received
        ]
        return [m for m in found if address in str(m["To"])]

    def status(self, address: str) -> str | None:
        state = self.app.store.subscriber_state(address)
        return state.status if state else None


def confirm_path(message: Message) -> str:
    body = message.get_body(("plain",))
    assert body is not None
    found = re.search(r"https://digest\.paperpost\.example(/confirm/[A-Za-z0-9._~%-]+)", str(
        body.get_content()))  # fmt: skip
    assert found, "no confirmation link in the message"
    return found.group(1)


@pytest.fixture
def site_factory(
    tmp_path: Path, smtp_server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[object]:
    monkeypatch.setenv("PAPERPOST_TEST_SECRET", SECRET)
    apps: list[App] = []

    async def make(web_extra: str = "", settings: SubscribeSettings | None = None) -> Site:
        path = tmp_path / "paperpost.toml"
        path.write_text(
            CONFIG.format(tmp=tmp_path, smtp_port=smtp_server.port, web_extra=web_extra),
            encoding="utf-8",
        )
        config = load_config(path)
        clock = FakeClock(datetime(2026, 11, 23, 9, 0, tzinfo=UTC))
        app = App(config, clock=clock)
        apps.append(app)
        app.sync()
        readers = AppReaders(app)
        web = create_app(
            readers,
            app.signer(),
            admin_token=None,
            clock=clock,
            list_name="Paperpost test",
            readers=readers,
            subscribe=settings
            or SubscribeSettings(
                enabled=config.file.web.subscribe,
                per_address_per_hour=config.file.web.subscribe_per_address_per_hour,
                per_client_per_hour=config.file.web.subscribe_per_client_per_hour,
            ),
        )
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=web), base_url="https://digest.paperpost.example"
        )
        return Site(app, client, smtp_server, clock)

    yield make
    for app in apps:
        app.close()


@pytest.fixture
async def site(site_factory) -> AsyncIterator[Site]:  # type: ignore[no-untyped-def]
    s = await site_factory()
    yield s
    await s.client.aclose()


async def test_the_form_offers_the_picker_a_honeypot_and_only_its_own_script(site: Site) -> None:
    response = await site.client.get("/subscribe")
    assert response.status_code == 200
    assert 'value="cs.LG"' in response.text and 'name="website"' in response.text
    csp = response.headers["content-security-policy"]
    assert "script-src 'sha256-" in csp and "unsafe-inline" not in csp.split("script-src")[1]
    assert "default-src 'none'" in csp and "set-cookie" not in response.headers


async def test_double_opt_in_one_mail_a_page_that_asks_and_a_single_use_link(site: Site) -> None:
    response = await site.client.post("/subscribe", data=GOOD)
    assert response.status_code == 200 and "Check your inbox" in response.text
    assert site.status("new@lab.example") == "pending"
    [mail] = site.mails_to("new@lab.example")
    assert mail["Subject"] == "Confirm your subscription to Paperpost test"
    assert mail["List-Unsubscribe"] is None and mail["Message-ID"].endswith("@paperpost.example>")
    path = confirm_path(mail)

    page = await site.client.get(path)  # what a link scanner does: nothing happens
    assert page.status_code == 200 and 'id="confirm"' in page.text
    assert site.status("new@lab.example") == "pending"

    done = await site.client.post(path)
    assert done.status_code == 200 and "You are subscribed" in done.text
    assert site.status("new@lab.example") == "active"
    reader = site.app.reader("new@lab.example")
    assert reader.origin == "self-service"
    assert reader.subscriber.schedule.frequency == "weekly:mon"
    assert reader.subscriber.schedule.timezone == "Europe/Paris"
    assert reader.subscriber.profile.categories == ("cs.LG", "stat.ML")
    manage = re.search(r'href="(/manage/[^"]+)"', done.text)
    assert manage and (await site.client.get(manage.group(1))).status_code == 200

    again = await site.client.post(path)  # single use
    assert again.status_code == 400 and "not valid" in again.text
    assert len(site.mails_to("new@lab.example")) == 1


async def test_known_suppressed_and_new_addresses_get_the_same_answer(site: Site) -> None:
    site.app.store.sync_subscribers([], now=site.clock())  # nothing else changes
    answers = []
    for address in ("ada@lab.example", "gone@lab.example", "fresh@lab.example"):
        if address == "gone@lab.example":
            site.app.store.erase_reader(address, now=site.clock())
        response = await site.client.post("/subscribe", data=GOOD | {"email": address})
        answers.append((response.status_code, response.text))
    assert answers[0] == answers[1] == answers[2]
    assert site.mails_to("ada@lab.example") == [] and site.mails_to("gone@lab.example") == []
    assert len(site.mails_to("fresh@lab.example")) == 1
    assert site.status("gone@lab.example") is None
    ada = site.app.reader("ada@lab.example")
    assert ada.origin == "config" and ada.subscriber.profile.categories == ("cs.CL",)


async def test_the_answer_is_complete_before_the_confirmation_is_mailed(site: Site) -> None:
    # Mailing inside the request would make a new address answer measurably slower than a
    # known one. Drive the ASGI app by hand and look at the sink when the last byte leaves.
    body = urlencode(GOOD | {"email": "timing@lab.example"}, doseq=True).encode()
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "https", "path": "/subscribe", "raw_path": b"/subscribe", "query_string": b"",
        "root_path": "", "client": ("192.0.2.7", 50000), "server": ("digest.example", 443),
        "headers": [(b"host", b"digest.paperpost.example"),
                    (b"content-type", b"application/x-www-form-urlencoded"),
                    (b"content-length", str(len(body)).encode())],
    }  # fmt: skip
    mails_when_answered: list[int] = []
    statuses: list[int] = []

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Mapping[str, object]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(int(message["status"]))  # type: ignore[call-overload]
        if message["type"] == "http.response.body" and not message.get("more_body"):
            mails_when_answered.append(len(site.mails_to("timing@lab.example")))

    transport = site.client._transport
    assert isinstance(transport, httpx.ASGITransport)
    await transport.app(scope, receive, send)
    assert statuses == [200] and mails_when_answered == [0]
    assert len(site.mails_to("timing@lab.example")) == 1  # sent once the answer was out


async def test_the_honeypot_gets_the_usual_answer_and_nothing_happens(site: Site) -> None:
    response = await site.client.post("/subscribe", data=GOOD | {"website": "http://spam"})
    assert response.status_code == 200 and "Check your inbox" in response.text
    assert site.status("new@lab.example") is None and site.smtp.received == []


async def test_a_hundred_posts_from_one_client_are_throttled(site: Site) -> None:
    codes = []
    for i in range(100):
        response = await site.client.post("/subscribe", data=GOOD | {"email": f"u{i}@lab.example"})
        codes.append(response.status_code)
    assert codes[:20] == [200] * 20
    assert codes[20:] == [429] * 80
    assert len(site.smtp.received) == 20  # nothing was even recorded for the rest
    assert site.status("u20@lab.example") is None


async def test_one_address_is_throttled_whatever_the_client(site: Site) -> None:
    codes = []
    for i in range(5):
        transport = httpx.ASGITransport(app=site.client._transport.app, client=(f"10.0.0.{i}", 1))  # type: ignore[attr-defined]
        async with httpx.AsyncClient(transport=transport, base_url="https://d.example") as c:
            codes.append((await c.post("/subscribe", data=GOOD)).status_code)
    assert codes == [200, 200, 200, 429, 429]
    assert len(site.mails_to("new@lab.example")) == 3  # each sign-up again: a new link


async def _codes_from_one_client(sites: list[Site], posts: int) -> list[int]:
    """``posts`` sign-ups of new addresses from one client, in turn through each site;
    client and addresses are new to every run (the windows last an hour)."""
    tag = uuid.uuid4().hex[:12]
    codes = []
    for i in range(posts):
        app = sites[i % len(sites)].client._transport.app  # type: ignore[attr-defined]
        transport = httpx.ASGITransport(app=app, client=(f"client-{tag}", 1))
        async with httpx.AsyncClient(transport=transport, base_url="https://d.example") as c:
            data = GOOD | {"email": f"u{i}-{tag}@lab.example"}
            codes.append((await c.post("/subscribe", data=data)).status_code)
    return codes


async def test_daemons_share_the_limits_through_redis(site_factory) -> None:  # type: ignore[no-untyped-def]
    """Two daemons on one database: in memory each counts alone, so one client gets twice
    the limit; with Redis the limit holds across both."""
    require_service("redis", "127.0.0.1", 6379)
    alone = SubscribeSettings(per_client_per_hour=4, per_address_per_hour=3)
    memory = [await site_factory(settings=alone) for _ in range(2)]
    assert await _codes_from_one_client(memory, 10) == [200] * 8 + [429] * 2
    shared = replace(alone, rate_limit_storage="redis://127.0.0.1:6379/0")
    sites = [await site_factory(settings=shared) for _ in range(2)]
    assert await _codes_from_one_client(sites, 10) == [200] * 4 + [429] * 6


async def test_an_unreachable_redis_falls_back_to_counting_in_memory(
    site_factory,  # type: ignore[no-untyped-def]
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Port 1 on loopback: nothing listens, the connection is refused at once.
    broken = SubscribeSettings(per_client_per_hour=3, rate_limit_storage="redis://127.0.0.1:1/0")
    site = await site_factory(settings=broken)
    assert await _codes_from_one_client([site], 5) == [200] * 3 + [429] * 2
    assert any("rate-limit storage failed" in r.getMessage() for r in caplog.records)


def test_check_names_the_rate_limit_storage() -> None:
    assert "each daemon counts alone" in check_rate_storage("memory://")
    with pytest.raises(ValueError, match=r"redis://127\.0\.0\.1:1 does not answer"):
        check_rate_storage("redis://:secret@127.0.0.1:1/0")  # the password is never shown


def test_check_refuses_a_storage_that_is_not_redis_or_does_not_answer(write_config) -> None:  # type: ignore[no-untyped-def]
    def config_with(storage: str) -> Path:
        path = write_config()
        text = path.read_text(encoding="utf-8")
        path.write_text(text.replace("[web]\n", f'[web]\nrate_limit_storage = "{storage}"\n'))
        return path

    with pytest.raises(ConfigError, match="rate_limit_storage: expected memory:// or a Redis"):
        load_config(config_with("mongodb://x"))
    unreachable = load_config(config_with("redis://127.0.0.1:1/0"))
    with (
        App(unreachable) as app,
        pytest.raises(ConfigError, match=r"web\.rate_limit_storage: .* does not answer"),
    ):
        app.check()


async def test_links_expire_and_only_the_latest_link_of_a_sign_up_works(site: Site) -> None:
    await site.client.post("/subscribe", data=GOOD)
    await site.client.post("/subscribe", data=GOOD)
    first, second = (confirm_path(m) for m in site.mails_to("new@lab.example"))
    assert (await site.client.post(first)).status_code == 400  # replaced by the second
    site.clock.now += timedelta(hours=49)
    assert (await site.client.post(second)).status_code == 400  # expired
    assert site.status("new@lab.example") == "pending"
    assert site.app.expire_signups() == 1
    assert site.status("new@lab.example") is None


async def test_a_link_cannot_confirm_another_address(site: Site) -> None:
    await site.client.post("/subscribe", data=GOOD)
    await site.client.post("/subscribe", data=GOOD | {"email": "eve@lab.example"})
    signer = site.app.signer()
    mine = signer.verify_reader(confirm_path(site.mails_to("eve@lab.example")[0])[9:],
                                purpose="confirm", now=site.clock())  # fmt: skip
    new = site.app.reader("new@lab.example").id
    forged = signer.reader_token(  # what Eve cannot make without the key; even with her nonce
        subscriber_id=new, purpose="confirm", nonce=mine.nonce, now=site.clock()
    )
    assert (await site.client.post(f"/confirm/{forged}")).status_code == 400
    # Eve's signature on the body of New's link (a splice of two real links) fails too.
    eve_body, eve_sig = confirm_path(site.mails_to("eve@lab.example")[0]).rsplit(".", 1)
    new_body = confirm_path(site.mails_to("new@lab.example")[0]).rsplit(".", 1)[0]
    assert (await site.client.post(f"{new_body}.{eve_sig}")).status_code == 400
    assert (await site.client.post(f"{eve_body}.{eve_sig}")).status_code == 200  # her own
    assert site.status("new@lab.example") == "pending"


async def test_bad_input_is_refused_with_every_problem_and_echoed_escaped(site: Site) -> None:
    hostile = '"><script>alert(1)</script>'
    response = await site.client.post(
        "/subscribe",
        data={
            "email": hostile + "@x",
            "about": "<img src=x onerror=alert(1)>",
            "timezone": "Mars/Olympus" + hostile,
            "send_at": "25:99",
            "frequency": "hourly",
            "categories": ["cs.LG", hostile],
        },
    )
    assert response.status_code == 400
    text = response.text
    assert "<script>alert" not in text and "<img src=x" not in text
    assert "&lt;img src=x onerror=alert(1)&gt;" in text  # the reader's text comes back, inert
    for field in ("Email address:", "Time zone:", "Time:", "How often:", "Categories:"):
        assert field in text
    assert site.status(hostile + "@x") is None and site.smtp.received == []


async def test_the_operator_can_close_the_page_or_restrict_it_to_domains(site_factory) -> None:  # type: ignore[no-untyped-def]
    closed = await site_factory("subscribe = false")
    assert (await closed.client.get("/subscribe")).status_code == 404
    assert (await closed.client.post("/subscribe", data=GOOD)).status_code == 404
    assert closed.smtp.received == []
    await closed.client.aclose()

    lab = await site_factory('subscribe_domains = ["uni.example"]')
    refused = await lab.client.post("/subscribe", data=GOOD)
    assert refused.status_code == 400 and "only takes addresses at uni.example" in refused.text
    ok = await lab.client.post("/subscribe", data=GOOD | {"email": "x@cs.uni.example"})
    assert ok.status_code == 200 and len(lab.mails_to("x@cs.uni.example")) == 1
    await lab.client.aclose()
