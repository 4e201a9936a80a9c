"""Feedback links against the daemon's real app and a real store (SQLite and PostgreSQL).

A feedback link is the digest's one signed token (reader id, outbox row id) plus the paper's
position in that digest: ``/feedback/<token>/<n>/<more|less>``; the digests here are real
outbox rows. Mail security gateways and link scanners fetch every link in a message with GET
(or HEAD) before the reader sees it, so GET must only ask; the confirmation page's button
POSTs to the same URL and that records. The store is what every assertion reads. Links
mailed in the old format (v1: the address in the token, one token per link) still work
until they expire.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from html.parser import HTMLParser
from urllib.parse import quote, quote_plus

import httpx
import pytest
from itsdangerous import URLSafeSerializer
from sqlalchemy import text

from pipeline.config import load_config
from pipeline.cycle.compose import make_renderer, make_signer
from pipeline.cycle.digest import build_digest, message_headers
from pipeline.daemon import Daemon
from pipeline.domain import Paper, Schedule
from pipeline.store import Delivery, DeliveryItem, PlannedDelivery, PlannedItem, Store
from pipeline.web.tokens import TokenSigner
from tests.conftest import ConfigFactory
from tests.factories import BASE_URL, SECRET
from tests.factories import MONDAY_NOON as NOW
from tests.web_fakes import FakeClock

ADA = "ada@lab.example"
GRACE = "grace@lab.example"
PAPER = "2106.09685"
TITLE = "LoRA: Low-Rank Adaptation of Large Language Models"
OTHER = "2305.18290"  # the digest's first paper; PAPER is its second


@dataclass
class Site:
    client: httpx.AsyncClient
    store: Store
    clock: FakeClock
    signer: TokenSigner
    digests: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)

    def digest(self, paper: str = PAPER, subscriber: str = ADA) -> tuple[int, int]:
        """(reader id, outbox row id) of a real digest carrying [OTHER, ``paper``]; one per
        (reader, paper), each its own period."""
        if (subscriber, paper) not in self.digests:
            state = self.store.subscriber_state(subscriber)
            assert state is not None
            titles = {OTHER: "Direct Preference Optimization", PAPER: TITLE}
            self.store.save_papers(
                [Paper(id=p, title=titles.get(p, p)) for p in (OTHER, paper)], now=NOW
            )
            key = f"p{len(self.digests)}"
            [row] = self.store.plan_deliveries(
                [
                    PlannedDelivery(
                        subscriber_id=state.id,
                        period_key=key,
                        window_start=NOW - timedelta(days=1),
                        window_end=NOW,
                        message_id=f"<{key}@paperpost.test>",
                        items=[PlannedItem(OTHER, 0.9, "r"), PlannedItem(paper, 0.8, "r")]
                        if paper != OTHER
                        else [PlannedItem(OTHER, 0.9, "r")],
                    )
                ],
                now=NOW,
            )
            assert row is not None
            self.digests[(subscriber, paper)] = (state.id, row)
        return self.digests[(subscriber, paper)]

    def token(self, paper: str = PAPER, subscriber: str = ADA, at: datetime = NOW) -> str:
        sid, did = self.digest(paper, subscriber)
        return self.signer.digest_token(subscriber_id=sid, delivery_id=did, now=at)

    def link(self, action: str, paper: str = PAPER, subscriber: str = ADA) -> str:
        position = 1 if paper == OTHER else 2
        return f"/feedback/{self.token(paper, subscriber)}/{position}/{action}"

    def feedback(self, address: str = ADA) -> tuple[list[str], list[str]]:
        """(liked, disliked) paper ids recorded for ``address``."""
        state = self.store.subscriber_state(address)
        assert state is not None
        return self.store.feedback([state.id])[state.id]

    def rows(self) -> list[tuple[str, str]]:
        """Every feedback row in the database: (paper id, signal)."""
        with self.store.engine.connect() as conn:
            found = conn.execute(text("SELECT paper_id, signal FROM feedback ORDER BY id"))
            return [(str(p), str(s)) for p, s in found]


@pytest.fixture
async def site(db_url: str, write_config: ConfigFactory) -> AsyncIterator[Site]:
    Store.open(db_url, auto_upgrade=True).close()
    config = load_config(write_config(db_url=db_url))
    clock = FakeClock(NOW)
    daemon = Daemon(config, clock=clock)
    try:
        daemon.core.sync(now=NOW)
        transport = httpx.ASGITransport(app=daemon.app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
            yield Site(client, daemon.store, clock, TokenSigner([SECRET]))
    finally:
        daemon.store.close()


def assert_safe_page(response: httpx.Response) -> None:
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["cache-control"] == "no-store"
    csp = response.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "form-action 'self'" in csp
    assert "frame-ancestors 'none'" in csp and response.headers["x-frame-options"] == "DENY"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert "set-cookie" not in response.headers
    assert not re.search(r"<\s*script\b", response.text, re.I)


class Forms(HTMLParser):
    """The forms of a page: (method, action) plus the ids of their buttons."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[tuple[str | None, str | None]] = []
        self.buttons: list[str | None] = []
        self.handlers: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        self.handlers += [name for name, _ in attrs if name.startswith("on")]
        if tag == "form":
            self.forms.append((values.get("method"), values.get("action")))
        elif tag == "button":
            self.buttons.append(values.get("id"))


def forms_of(html: str) -> Forms:
    parser = Forms()
    parser.feed(html)
    return parser


# ---------------------------------------------------------------- GET asks, POST records


@pytest.mark.parametrize(
    ("action", "title", "button"),
    [
        ("more", f"More papers like {TITLE}?", "More like this"),
        ("less", f"Fewer papers like {TITLE}?", "Less like this"),
    ],
    ids=["more", "less"],
)
async def test_get_shows_a_confirmation_and_records_nothing(
    site: Site, action: str, title: str, button: str
) -> None:
    response = await site.client.get(site.link(action))
    assert response.status_code == 200
    assert f"<title>{title}</title>" in response.text
    assert f"<h1>{title}</h1>" in response.text
    assert button in response.text
    forms = forms_of(response.text)
    # One form, POSTing to the URL the page came from (no action attribute), no JavaScript.
    assert forms.forms == [("post", None)]
    assert forms.buttons == ["feedback"]
    assert forms.handlers == []
    assert_safe_page(response)
    assert site.rows() == []
    assert site.feedback() == ([], [])


async def test_scanner_fetches_record_nothing(site: Site) -> None:
    """What Safe Links and friends do: GET and HEAD every link, more than once."""
    for action in ("more", "less"):
        for _ in range(3):
            assert (await site.client.get(site.link(action))).status_code == 200
            assert (await site.client.head(site.link(action))).status_code == 200
    assert site.rows() == []


@pytest.mark.parametrize(
    ("action", "expected"),
    [("more", ([PAPER], [])), ("less", ([], [PAPER]))],
    ids=["more", "less"],
)
async def test_post_records_the_signal(
    site: Site, action: str, expected: tuple[list[str], list[str]]
) -> None:
    response = await site.client.post(site.link(action))
    assert response.status_code == 200
    assert "location" not in response.headers
    assert "<h1>Thanks, noted</h1>" in response.text
    assert TITLE in response.text
    assert_safe_page(response)
    assert site.feedback() == expected
    assert site.feedback(GRACE) == ([], [])


async def test_the_confirmation_forms_own_post_records(site: Site) -> None:
    """The request a browser sends for the button: an empty urlencoded body."""
    url = site.link("more")
    page = await site.client.get(url)
    assert forms_of(page.text).forms == [("post", None)]
    response = await site.client.post(
        url, content=b"", headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert response.status_code == 200
    assert site.feedback() == ([PAPER], [])


async def test_a_replayed_post_records_once(site: Site) -> None:
    url = site.link("more")
    first = await site.client.post(url)
    site.clock.now += timedelta(minutes=5)
    second = await site.client.post(url)
    assert first.status_code == second.status_code == 200
    assert first.text == second.text
    assert site.rows() == [(PAPER, "more")]


async def test_the_latest_signal_for_a_paper_wins(site: Site) -> None:
    assert (await site.client.post(site.link("more"))).status_code == 200
    assert (await site.client.post(site.link("less"))).status_code == 200
    assert site.rows() == [(PAPER, "less")]
    assert site.feedback() == ([], [PAPER])


async def test_the_position_names_the_paper_and_only_the_digests_positions_work(
    site: Site,
) -> None:
    token = site.token()
    first = await site.client.get(f"/feedback/{token}/1/less")
    assert "<h1>Fewer papers like Direct Preference Optimization?</h1>" in first.text
    assert (await site.client.post(f"/feedback/{token}/1/less")).status_code == 200
    for position in ("0", "3", "12345"):
        for method in ("GET", "POST"):
            response = await site.client.request(method, f"/feedback/{token}/{position}/more")
            assert response.status_code == 400
            assert "This link is not valid" in response.text
    assert site.rows() == [(OTHER, "less")]


async def test_a_digest_of_another_reader_or_of_no_one_opens_nothing(site: Site) -> None:
    """Genuine ids that name no digest of that reader: Grace's id with Ada's row, and the
    row of a reader who has been erased since (her rows went with her)."""
    _, row = site.digest()
    grace, _ = site.digest(subscriber=GRACE)
    crossed = site.signer.digest_token(subscriber_id=grace, delivery_id=row, now=NOW)
    erased = site.token()  # Ada's own, genuine
    assert site.store.erase_reader(ADA, now=NOW)
    for token in (crossed, erased):
        for method in ("GET", "POST"):
            response = await site.client.request(method, f"/feedback/{token}/1/more")
            assert response.status_code == 410
            assert "not active" in response.text
            assert_safe_page(response)
    assert site.rows() == []


def _v1(payload: dict[str, object], key: str = SECRET) -> str:
    """A link as mailed before one token per digest: plain itsdangerous, the address inside."""
    raw = URLSafeSerializer(
        key, salt="paperpost.link.v1", signer_kwargs={"digest_method": hashlib.sha256}
    )
    token = raw.dumps(payload)
    assert isinstance(token, str)
    return token


async def test_an_old_format_feedback_link_works_until_it_expires(site: Site) -> None:
    site.digest()  # the paper is in the database: the page names it by title
    expires = int((NOW + timedelta(days=90)).timestamp())
    url = f"/feedback/{_v1({'s': ADA, 'a': 'more', 'e': expires, 'p': PAPER})}"
    asked = await site.client.get(url)
    assert f"<h1>More papers like {TITLE}?</h1>" in asked.text
    assert (await site.client.post(url)).status_code == 200
    assert site.feedback() == ([PAPER], [])
    site.clock.now = NOW + timedelta(days=90)
    assert (await site.client.get(url)).status_code == 400
    assert (await site.client.post(url)).status_code == 400


async def test_an_old_format_unsubscribe_link_works_until_it_expires(site: Site) -> None:
    expires = NOW + timedelta(days=366)
    url = f"/unsubscribe/{_v1({'s': GRACE, 'a': 'unsubscribe', 'e': int(expires.timestamp())})}"
    site.clock.now = expires
    assert (await site.client.post(url)).status_code == 400
    state = site.store.subscriber_state(GRACE)
    assert state is not None and state.status == "active"
    site.clock.now = expires - timedelta(seconds=1)
    asked = await site.client.get(url)
    assert asked.status_code == 200 and GRACE in asked.text
    assert (await site.client.post(url)).status_code == 200
    state = site.store.subscriber_state(GRACE)
    assert state is not None and state.status == "unsubscribed"


async def test_a_store_failure_answers_503_and_says_nothing_changed(site: Site) -> None:
    with site.store.engine.begin() as conn:
        conn.execute(text("DROP TABLE feedback"))
    response = await site.client.post(site.link("more"))
    assert response.status_code == 503
    assert "Nothing was changed" in response.text
    assert "table" not in response.text.lower()  # the database's error stays in the log
    assert_safe_page(response)


# ---------------------------------------------------------------- bad tokens


def _signed(site: Site, *, key: str = SECRET, at: datetime = NOW) -> str:
    """Ada's digest token (her real row) as signed by ``key`` at ``at``: path incl. position."""
    sid, did = site.digest()
    token = TokenSigner([key]).digest_token(subscriber_id=sid, delivery_id=did, now=at)
    return f"{token}/2/more"


def _tampered(site: Site) -> str:
    token = site.token()
    flipped = "A" if token[1] != "A" else "B"
    return f"{token[0]}{flipped}{token[2:]}/2/more"


def _grafted(site: Site) -> str:
    """Grace's ids with the timestamp and signature of Ada's genuine token."""
    mine, theirs = site.token(), site.token(subscriber=GRACE)
    return f"{theirs.split('.')[0]}{mine[mine.index('.') :]}/2/more"


BAD_TOKENS: list[tuple[str, Callable[[Site], str]]] = [
    ("forged", lambda s: _signed(s, key="an-attacker-guessed-key-123")),
    ("tampered", _tampered),
    ("grafted-signature", _grafted),
    ("truncated-signature", lambda s: f"{s.token()[:-1]}/2/more"),
    ("expired", lambda s: _signed(s, at=NOW - timedelta(days=90))),
    ("no-position", lambda s: s.token()),
    ("unknown-signal", lambda s: f"{s.token()}/2/maybe"),
    (
        "preview-token",
        lambda s: (
            TokenSigner([SECRET]).reader_token(
                subscriber_id=s.digest()[0], purpose="preview", now=NOW
            )
            + "/2/more"
        ),
    ),
    ("v1-unsubscribe-token", lambda s: _v1({"s": ADA, "a": "unsubscribe", "e": 2_000_000_000})),
    ("garbage", lambda s: "not-a-token"),
    ("too-long", lambda s: "A" * 3000 + "." + "B" * 43 + "/2/more"),
]


@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize("make", [f for _, f in BAD_TOKENS], ids=[n for n, _ in BAD_TOKENS])
async def test_bad_tokens_get_the_uniform_400_page_on_get_and_post(
    site: Site, method: str, make: Callable[[Site], str]
) -> None:
    response = await site.client.request(method, f"/feedback/{make(site)}")
    reference = await site.client.post("/unsubscribe/x.y")
    assert response.status_code == 400
    assert response.text == reference.text
    assert "This link is not valid" in response.text
    assert "<form" not in response.text
    assert_safe_page(response)
    assert site.rows() == []


async def test_a_link_expires_exactly_at_its_lifetime(site: Site) -> None:
    url = site.link("more")
    site.clock.now = NOW + timedelta(days=90) - timedelta(seconds=1)
    assert (await site.client.get(url)).status_code == 200
    site.clock.now = NOW + timedelta(days=90)
    assert (await site.client.get(url)).status_code == 400
    assert (await site.client.post(url)).status_code == 400
    assert site.rows() == []


# ---------------------------------------------------------------- escaping


HOSTILE = [
    'url:https://ok.example/q?a="><script>alert(12)</script>',
    "</strong><img src=x onerror=alert(13)>",
    "' onmouseover='alert(14)",
]


@pytest.mark.parametrize("paper", HOSTILE, ids=["script", "img", "attribute-quote"])
@pytest.mark.parametrize("action", ["more", "less"])
async def test_a_hostile_paper_id_is_escaped_on_both_pages(
    site: Site, paper: str, action: str
) -> None:
    url = site.link(action, paper=paper)
    for response in (await site.client.get(url), await site.client.post(url)):
        assert response.status_code == 200
        assert_safe_page(response)
        assert paper not in response.text
        assert "<img" not in response.text
        assert forms_of(response.text).handlers == []
    assert site.rows() == [(paper, action)]


async def test_the_confirmation_title_escapes_the_paper_id(site: Site) -> None:
    paper = "</title><script>alert(15)</script>"
    response = await site.client.get(site.link("more", paper=paper))
    escaped = "&lt;/title&gt;&lt;script&gt;alert(15)&lt;/script&gt;"  # its title, too
    assert f"<title>More papers like {escaped}?</title>" in response.text
    assert f"<h1>More papers like {escaped}?</h1>" in response.text


# ---------------------------------------------------------------- methods and metrics


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH"])
async def test_other_methods_are_405(site: Site, method: str) -> None:
    response = await site.client.request(method, site.link("more"))
    assert response.status_code == 405
    assert "Not found" in response.text
    assert site.rows() == []


async def test_metrics_count_feedback_by_method_and_status(site: Site) -> None:
    await site.client.get(site.link("more"))
    await site.client.get(site.link("less"))
    await site.client.post(site.link("more"))
    await site.client.post("/feedback/not-a-token")
    gone = site.signer.digest_token(subscriber_id=999, delivery_id=999, now=NOW)
    await site.client.post(f"/feedback/{gone}/1/more")
    text_ = (await site.client.get("/metrics")).text
    for method, status, n in [
        ("GET", 200, 2),
        ("POST", 200, 1),
        ("POST", 400, 1),
        ("POST", 410, 1),
    ]:
        sample = f'{{method="{method}",route="feedback",status="{status}"}} {n}\n'
        assert f"paperpost_web_requests_total{sample}" in text_, text_


# ---------------------------------------------------------------- the links in a digest


def test_a_digests_links_are_short_and_never_carry_the_address(
    write_config: ConfigFactory,
) -> None:
    """The text part of a rendered 20-paper digest: every URL under 120 characters with
    the example config's base URL and ids as large as a year of 100,000 daily readers
    makes, and no URL (nor the List-Unsubscribe one) holds the address, plain or encoded."""
    path = write_config()
    path.write_text(
        path.read_text().replace("https://digest.paperpost.example", "https://digest.lab.example")
    )
    config = load_config(path)
    email = "ada.lovelace+papers@analytical-engine.example"
    papers = [Paper(id=f"2511.{i:05d}", title=f"Paper {i}") for i in range(20)]
    delivery = Delivery(
        id=36_500_000,
        subscriber_id=100_000,
        email=email,
        name="Ada",
        period_key="2026-11-23",
        status="claimed",
        attempts=0,
        message_id="<x@lab.example>",
        window_start=NOW - timedelta(days=1),
        window_end=NOW,
        created_at=NOW,
        items=tuple(DeliveryItem(p, 0.5, "matched", i >= 15) for i, p in enumerate(papers)),
        schedule=Schedule("daily", NOW.time(), "UTC"),
    )
    digest = build_digest(config, make_signer(config), delivery, delivery.schedule, now=NOW)
    rendered = make_renderer(config).render(digest)
    urls = re.findall(r"https?://[^\s<>\"']+", rendered.text)
    assert len([u for u in urls if "/feedback/" in u]) == 40  # a "more" and a "less" each
    assert any("/unsubscribe/" in u for u in urls) and any("/manage/" in u for u in urls)
    headers = message_headers(config, delivery, digest, "Subject", now=NOW)
    assert headers.unsubscribe_url is not None
    hrefs = re.findall(r'href="([^"]+)"', rendered.html)
    encoded = {email, quote(email), quote(email, safe=""), quote_plus(email), "lovelace"}
    for url in [*urls, *hrefs, headers.unsubscribe_url]:
        assert len(url) < 120, url
        assert not any(form in url for form in encoded), url
    # One token for the whole digest: every link carries the same one.
    tokens = {u.split("/")[4] for u in urls if "/feedback/" in u or "/unsubscribe/" in u}
    assert len(tokens) == 1
