"""Feedback links against the daemon's real app and a real store (SQLite and PostgreSQL).

Mail security gateways and link scanners fetch every link in a message with GET (or HEAD)
before the reader sees it, so GET must only ask; the confirmation page's button POSTs to the
same URL and that records. The store is what every assertion reads.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser

import httpx
import pytest
from sqlalchemy import text

from pipeline.config import load_config
from pipeline.daemon import Daemon
from pipeline.store import Store
from pipeline.web.tokens import TokenSigner
from tests.conftest import ConfigFactory
from tests.web_fakes import FakeClock

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
SECRET = "test-secret-0123456789abcdef"  # conftest's secret_env value
BASE_URL = "https://digest.paperpost.example"
ADA = "ada@lab.example"
GRACE = "grace@lab.example"
PAPER = "2106.09685"


@dataclass
class Site:
    client: httpx.AsyncClient
    store: Store
    clock: FakeClock
    signer: TokenSigner

    def link(self, action: str, paper: str = PAPER, subscriber: str = ADA) -> str:
        token = self.signer.sign(subscriber=subscriber, action=action, paper=paper, now=NOW)
        return f"/feedback/{token}"

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
        ("more", f"More papers like {PAPER}?", "More like this"),
        ("less", f"Fewer papers like {PAPER}?", "Less like this"),
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
    assert PAPER in response.text
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


async def test_post_for_an_unknown_subscriber_is_410(site: Site) -> None:
    url = site.link("more", subscriber="gone@lab.example")
    asked = await site.client.get(url)  # GET touches no database, so it cannot know
    assert asked.status_code == 200
    response = await site.client.post(url)
    assert response.status_code == 410
    assert "not active" in response.text
    assert_safe_page(response)
    assert site.rows() == []


async def test_a_store_failure_answers_503_and_says_nothing_changed(site: Site) -> None:
    with site.store.engine.begin() as conn:
        conn.execute(text("DROP TABLE feedback"))
    response = await site.client.post(site.link("more"))
    assert response.status_code == 503
    assert "Nothing was changed" in response.text
    assert "table" not in response.text.lower()  # the database's error stays in the log
    assert_safe_page(response)


# ---------------------------------------------------------------- bad tokens


def _signed(action: str, *, key: str = SECRET, at: datetime = NOW, paper: str = PAPER) -> str:
    return TokenSigner([key]).sign(subscriber=ADA, action=action, paper=paper, now=at)


def _tampered() -> str:
    payload, _, signature = _signed("more").rpartition(".")
    flipped = "A" if payload[-2] != "A" else "B"
    return f"{payload[:-2]}{flipped}{payload[-1]}.{signature}"


def _grafted() -> str:
    """Grace's "less" claims with the signature of Ada's genuine "more" link."""
    mine = _signed("more")
    theirs = TokenSigner(["attacker-key-0123456789"]).sign(
        subscriber=GRACE, action="less", paper=PAPER, now=NOW
    )
    return f"{theirs.rpartition('.')[0]}.{mine.rpartition('.')[2]}"


BAD_TOKENS: list[tuple[str, Callable[[], str]]] = [
    ("forged", lambda: _signed("more", key="an-attacker-guessed-key-123")),
    ("tampered", _tampered),
    ("grafted-signature", _grafted),
    ("truncated-signature", lambda: _signed("less")[:-1]),
    ("expired", lambda: _signed("more", at=NOW - timedelta(days=90))),
    ("unsubscribe-token", lambda: _signed("unsubscribe")),
    (
        "preview-token",
        lambda: TokenSigner([SECRET]).sign(subscriber=ADA, action="preview", now=NOW),
    ),
    ("garbage", lambda: "not-a-token"),
    ("too-long", lambda: "A" * 3000 + "." + "B" * 43),
]


@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize("make", [f for _, f in BAD_TOKENS], ids=[n for n, _ in BAD_TOKENS])
async def test_bad_tokens_get_the_uniform_400_page_on_get_and_post(
    site: Site, method: str, make: Callable[[], str]
) -> None:
    response = await site.client.request(method, f"/feedback/{make()}")
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
    escaped = "&lt;/title&gt;&lt;script&gt;alert(15)&lt;/script&gt;"
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
    await site.client.post(site.link("more", subscriber="gone@lab.example"))
    text_ = (await site.client.get("/metrics")).text
    for method, status, n in [
        ("GET", 200, 2),
        ("POST", 200, 1),
        ("POST", 400, 1),
        ("POST", 410, 1),
    ]:
        sample = f'{{method="{method}",route="feedback",status="{status}"}} {n}\n'
        assert f"paperpost_web_requests_total{sample}" in text_, text_
