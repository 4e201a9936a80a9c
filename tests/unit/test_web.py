"""HTTP-level tests of the reader-facing web app against an in-memory backend."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable
from datetime import timedelta

import httpx
import pytest
from itsdangerous import URLSafeSerializer

from pipeline.web.app import create_app
from pipeline.web.tokens import TokenSigner
from tests.web_fakes import FakeBackend, FakeClock

KEY = "current-signing-key-0123456789"
OLD_KEY = "previous-signing-key-987654321"
ADMIN = "admin-token-with-enough-entropy"
ADA = "ada@lab.example"
ADA_ID, DIGEST_ID = 1, 10  # Ada's reader id and the outbox row of her last digest
PAPERS = (("2305.18290", "Direct Preference Optimization"), ("2106.09685", "LoRA"))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend(
        active={ADA},
        previews={ADA: "<html><body>Ada's next digest</body></html>"},
        readers={ADA_ID: ADA},
        digests={(ADA_ID, DIGEST_ID): PAPERS},
    )


@pytest.fixture
def signer() -> TokenSigner:
    return TokenSigner([KEY, OLD_KEY])


@pytest.fixture
async def client(
    backend: FakeBackend, signer: TokenSigner, clock: FakeClock
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(backend, signer, admin_token=ADMIN, clock=clock, list_name="Lab <Digest>")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://digest.example") as c:
        yield c


def unsubscribe_token(
    clock: FakeClock, sid: int = ADA_ID, key: str = KEY, did: int = DIGEST_ID
) -> str:
    """The digest's one token: its unsubscribe, manage and feedback links carry it."""
    return TokenSigner([key]).digest_token(subscriber_id=sid, delivery_id=did, now=clock())


def feedback_path(token: str, position: int = 1, signal: str = "more") -> str:
    return f"/feedback/{token}/{position}/{signal}"


def v1_token(payload: dict[str, object], key: str = KEY) -> str:
    """A link mailed before one token per digest (format v1), by plain itsdangerous."""
    raw = URLSafeSerializer(
        key, salt="paperpost.link.v1", signer_kwargs={"digest_method": hashlib.sha256}
    )
    token = raw.dumps(payload)
    assert isinstance(token, str)
    return token


def v1(clock: FakeClock, action: str, paper: str | None = None, days: int = 90) -> str:
    payload: dict[str, object] = {
        "s": ADA,
        "a": action,
        "e": int(clock().timestamp()) + days * 86400,
    }
    if paper is not None:
        payload["p"] = paper
    return v1_token(payload)


def assert_safe_headers(response: httpx.Response) -> None:
    assert "set-cookie" not in response.headers
    assert response.headers["cache-control"] == "no-store"
    assert "default-src 'none'" in response.headers["content-security-policy"]
    assert response.headers["x-content-type-options"] == "nosniff"


# ---------------------------------------------------------------- unsubscribe


async def test_get_unsubscribe_shows_a_confirmation_and_changes_nothing(
    client: httpx.AsyncClient, backend: FakeBackend, clock: FakeClock
) -> None:
    response = await client.get(f"/unsubscribe/{unsubscribe_token(clock)}")
    assert response.status_code == 200
    assert '<form method="post">' in response.text
    assert 'name="List-Unsubscribe" value="One-Click"' in response.text
    assert ADA in response.text
    assert "Lab &lt;Digest&gt;" in response.text
    assert backend.calls == []
    assert ADA in backend.active
    assert_safe_headers(response)


@pytest.mark.parametrize(
    "body",
    [
        {"data": {"List-Unsubscribe": "One-Click"}},
        {"files": {"List-Unsubscribe": (None, "One-Click")}},
        {
            "content": b"List-Unsubscribe=One-Click",
            "headers": {"Content-Type": "application/x-www-form-urlencoded"},
        },
        {},
    ],
    ids=["urlencoded", "multipart", "raw-urlencoded", "no-body"],
)
async def test_post_unsubscribe_one_click(
    client: httpx.AsyncClient, backend: FakeBackend, clock: FakeClock, body: dict[str, object]
) -> None:
    response = await client.post(f"/unsubscribe/{unsubscribe_token(clock)}", **body)  # type: ignore[arg-type]
    assert response.status_code == 200
    assert "location" not in response.headers
    assert "You are unsubscribed" in response.text
    assert backend.unsubscribed == {ADA: clock()}
    assert ADA not in backend.active
    assert_safe_headers(response)


async def test_post_unsubscribe_is_idempotent(
    client: httpx.AsyncClient, backend: FakeBackend, clock: FakeClock
) -> None:
    url = f"/unsubscribe/{unsubscribe_token(clock)}"
    first = await client.post(url, data={"List-Unsubscribe": "One-Click"})
    clock.now += timedelta(hours=1)
    second = await client.post(url, data={"List-Unsubscribe": "One-Click"})
    assert first.status_code == second.status_code == 200
    assert first.text == second.text
    assert backend.unsubscribed == {ADA: clock.now - timedelta(hours=1)}


async def test_unsubscribe_link_signed_with_the_previous_key_still_works(
    client: httpx.AsyncClient, backend: FakeBackend, clock: FakeClock
) -> None:
    response = await client.post(f"/unsubscribe/{unsubscribe_token(clock, key=OLD_KEY)}")
    assert response.status_code == 200
    assert ADA in backend.unsubscribed


async def test_unsubscribe_link_in_year_old_mail_works_and_expires_after(
    client: httpx.AsyncClient, backend: FakeBackend, clock: FakeClock
) -> None:
    url = f"/unsubscribe/{unsubscribe_token(clock)}"
    clock.now += timedelta(days=365)
    assert (await client.get(url)).status_code == 200
    clock.now += timedelta(days=1)
    assert (await client.post(url)).status_code == 400
    assert backend.calls == []


async def test_store_failure_answers_503_and_says_nothing_changed(
    client: httpx.AsyncClient, backend: FakeBackend, clock: FakeClock
) -> None:
    backend.broken = True
    response = await client.post(f"/unsubscribe/{unsubscribe_token(clock)}")
    assert response.status_code == 503
    assert "Nothing was changed" in response.text
    assert "locked" not in response.text


# ---------------------------------------------------------------- every bad token


def _forged(clock: FakeClock) -> str:
    return unsubscribe_token(clock, key="an-attacker-guessed-key-123")


def _tampered(clock: FakeClock) -> str:
    token = unsubscribe_token(clock)
    payload, _, sig = token.rpartition(".")
    return f"{payload[:-2]}{'A' if payload[-2] != 'A' else 'B'}{payload[-1]}.{sig}"


def _other_payload(clock: FakeClock) -> str:
    """Ada's digest token with the ids of someone else's (Eve signed those with her key)."""
    mine = unsubscribe_token(clock)
    eve = unsubscribe_token(clock, sid=2, key="eve-own-key-xxxxxxx")
    return eve.split(".")[0] + mine[mine.index(".") :]


def _expired(clock: FakeClock) -> str:
    signer = TokenSigner([KEY])
    at = clock() - timedelta(days=367)
    return signer.digest_token(subscriber_id=ADA_ID, delivery_id=DIGEST_ID, now=at)


def _expired_feedback(clock: FakeClock) -> str:
    signer = TokenSigner([KEY])
    at = clock() - timedelta(days=91)  # still fine for unsubscribing, not for feedback
    return signer.digest_token(subscriber_id=ADA_ID, delivery_id=DIGEST_ID, now=at)


def _preview_token(clock: FakeClock) -> str:
    return TokenSigner([KEY]).reader_token(subscriber_id=ADA_ID, purpose="preview", now=clock())


def _manage_token(clock: FakeClock) -> str:
    return TokenSigner([KEY]).reader_token(subscriber_id=ADA_ID, purpose="manage", now=clock())


# Paths after the route name; every one must get the uniform 400 without a backend call.
BAD_TOKENS: list[tuple[str, str, str, Callable[[FakeClock], str]]] = [
    ("GET", "unsubscribe", "forged", _forged),
    ("POST", "unsubscribe", "forged", _forged),
    ("POST", "unsubscribe", "tampered", _tampered),
    ("POST", "unsubscribe", "swapped-payload", _other_payload),
    ("POST", "unsubscribe", "expired", _expired),
    ("POST", "unsubscribe", "v1-feedback-token", lambda c: v1(c, "more", "2305.18290")),
    ("POST", "unsubscribe", "v1-expired", lambda c: v1(c, "unsubscribe", days=0)),
    ("POST", "unsubscribe", "preview-token", _preview_token),
    ("POST", "unsubscribe", "manage-reader-token", _manage_token),
    ("POST", "unsubscribe", "garbage", lambda c: "not-a-token"),
    ("POST", "unsubscribe", "too-long", lambda c: "A" * 3000 + "." + "B" * 43),
]


def _forged_feedback(clock: FakeClock) -> str:
    return feedback_path(unsubscribe_token(clock, key="x" * 20))


# GET (the confirmation page) verifies a feedback token exactly as POST (which records) does.
BAD_FEEDBACK_TOKENS: list[tuple[str, Callable[[FakeClock], str]]] = [
    ("forged", _forged_feedback),
    ("tampered", lambda c: feedback_path(unsubscribe_token(c)[:-1] + "x")),
    ("expired", lambda c: feedback_path(_expired_feedback(c))),
    ("preview-token", lambda c: feedback_path(_preview_token(c))),
    ("unknown-signal", lambda c: feedback_path(unsubscribe_token(c), signal="maybe")),
    ("digest-token-without-position", unsubscribe_token),
    ("v1-unsubscribe-token", lambda c: v1(c, "unsubscribe")),
    ("v1-no-paper", lambda c: v1(c, "more")),
    ("v1-expired", lambda c: v1(c, "more", "2305.18290", days=0)),
    ("v1-with-position", lambda c: feedback_path(v1(c, "more", "2305.18290"))),
    ("too-long", lambda c: feedback_path("A" * 3000 + "." + "B" * 43)),
]
BAD_TOKENS += [
    (method, "feedback", name, make)
    for method in ("GET", "POST")
    for name, make in BAD_FEEDBACK_TOKENS
]


@pytest.mark.parametrize(
    ("method", "route", "make"),
    [(m, r, f) for m, r, _, f in BAD_TOKENS],
    ids=[f"{m}-{r}-{name}" for m, r, name, _ in BAD_TOKENS],
)
async def test_every_bad_token_gets_the_same_400_page_and_changes_nothing(
    client: httpx.AsyncClient,
    backend: FakeBackend,
    clock: FakeClock,
    method: str,
    route: str,
    make: Callable[[FakeClock], str],
) -> None:
    tail = make(clock)
    path = tail if tail.startswith("/") else f"/{route}/{tail}"
    response = await client.request(method, path)
    reference = await client.post("/unsubscribe/x.y")
    assert response.status_code == 400
    assert response.text == reference.text  # one uniform page
    assert "This link is not valid" in response.text
    assert backend.calls == [] and backend.lookups == []
    assert backend.active == {ADA} and not backend.unsubscribed and not backend.feedback
    assert_safe_headers(response)


# ---------------------------------------------------------------- feedback


@pytest.mark.parametrize(
    ("position", "signal", "question"),
    [
        (1, "more", "More papers like Direct Preference Optimization?"),
        (2, "less", "Fewer papers like LoRA?"),
    ],
    ids=["more-first", "less-second"],
)
async def test_get_feedback_asks_and_only_post_records(
    client: httpx.AsyncClient,
    backend: FakeBackend,
    clock: FakeClock,
    position: int,
    signal: str,
    question: str,
) -> None:
    """The digest's token and a paper's position: the page names that paper by title."""
    url = feedback_path(unsubscribe_token(clock), position, signal)
    assert (await client.head(url)).status_code == 200  # scanners send HEAD too
    asked = await client.get(url)
    assert asked.status_code == 200
    assert f"<h1>{question}</h1>" in asked.text
    assert '<form method="post"><button type="submit" id="feedback">' in asked.text
    assert_safe_headers(asked)
    assert backend.calls == [] and backend.feedback == {}
    response = await client.post(url)
    assert response.status_code == 200
    assert "Thanks, noted" in response.text and PAPERS[position - 1][1] in response.text
    assert backend.feedback == {(ADA, PAPERS[position - 1][0]): signal}
    assert_safe_headers(response)


@pytest.mark.parametrize(
    "position", ["0", "3", "99999999999999999999", "-1", "1x", "%D9%A1", "%EF%BC%91"]
)
async def test_only_positions_the_digest_carried_are_accepted(
    client: httpx.AsyncClient, backend: FakeBackend, clock: FakeClock, position: str
) -> None:
    url = f"/feedback/{unsubscribe_token(clock)}/{position}/more"
    for method in ("GET", "POST"):
        response = await client.request(method, url)
        assert response.status_code == 400
        assert "This link is not valid" in response.text
    assert backend.calls == [] and backend.feedback == {}


async def test_a_digest_token_whose_row_is_not_that_readers_is_410(
    client: httpx.AsyncClient, backend: FakeBackend, clock: FakeClock
) -> None:
    """Validly signed ids that name no digest of that reader (an erased reader's row, or a
    row of another reader) open nothing."""
    backend.readers[2] = "bob@lab.example"
    for token in (unsubscribe_token(clock, sid=2), unsubscribe_token(clock, did=11)):
        for path in (feedback_path(token), f"/unsubscribe/{token}"):
            response = await client.post(path)
            assert response.status_code == 410
            assert "not active" in response.text
    assert backend.calls == [] and backend.feedback == {} and not backend.unsubscribed


async def test_old_v1_links_keep_working_until_they_expire(
    client: httpx.AsyncClient, backend: FakeBackend, clock: FakeClock
) -> None:
    """Links mailed before one token per digest carry the address; they still verify (with
    either key) until their own expiry, and then stop."""
    unsubscribe = f"/unsubscribe/{v1(clock, 'unsubscribe', days=366)}"
    feedback = f"/feedback/{v1(clock, 'less', '2106.09685')}"
    backend.titles = {"2106.09685": "LoRA"}
    asked = await client.get(feedback)
    assert asked.status_code == 200 and "<h1>Fewer papers like LoRA?</h1>" in asked.text
    assert (await client.post(feedback)).status_code == 200
    assert backend.feedback == {(ADA, "2106.09685"): "less"}
    old_key = v1_token(
        {"s": ADA, "a": "more", "e": int(clock().timestamp()) + 3600, "p": "2106.09685"},
        key=OLD_KEY,
    )
    assert (await client.post(f"/feedback/{old_key}")).status_code == 200
    assert backend.feedback == {(ADA, "2106.09685"): "more"}
    clock.now += timedelta(days=90)  # the feedback link's own expiry
    assert (await client.post(feedback)).status_code == 400
    assert (await client.get(unsubscribe)).status_code == 200
    clock.now += timedelta(days=276)  # the unsubscribe link's: 366 days after it was mailed
    assert (await client.post(unsubscribe)).status_code == 400
    assert not backend.unsubscribed
    clock.now -= timedelta(seconds=1)
    assert (await client.post(unsubscribe)).status_code == 200
    assert ADA in backend.unsubscribed


async def test_head_on_an_unsubscribe_link_changes_nothing(
    client: httpx.AsyncClient, backend: FakeBackend, clock: FakeClock
) -> None:
    response = await client.head(f"/unsubscribe/{unsubscribe_token(clock)}")
    assert response.status_code == 200
    assert backend.calls == []
    assert ADA in backend.active and not backend.unsubscribed


async def test_feedback_store_failure_answers_503(
    client: httpx.AsyncClient, backend: FakeBackend, clock: FakeClock
) -> None:
    backend.broken = True
    response = await client.post(feedback_path(unsubscribe_token(clock)))
    assert response.status_code == 503
    assert "Nothing was changed" in response.text
    assert "locked" not in response.text


async def test_feedback_for_an_unknown_subscriber_is_410(
    client: httpx.AsyncClient, backend: FakeBackend, clock: FakeClock
) -> None:
    token = v1_token({"s": "gone@lab.example", "a": "more", "e": 2_000_000_000, "p": "1"})
    response = await client.post(f"/feedback/{token}")
    assert response.status_code == 410
    assert "not active" in response.text
    assert backend.feedback == {}


async def test_values_from_tokens_are_escaped(
    client: httpx.AsyncClient, backend: FakeBackend, clock: FakeClock
) -> None:
    evil = '"><script>alert(1)</script>@x.example'
    backend.active.add(evil)
    backend.readers[3] = evil
    backend.digests[(3, 30)] = (("<img src=x onerror=alert(1)>", ""),)
    unsub = await client.get(f"/unsubscribe/{unsubscribe_token(clock, sid=3, did=30)}")
    feedback = feedback_path(unsubscribe_token(clock, sid=3, did=30))
    asked, noted = await client.get(feedback), await client.post(feedback)
    for response in (unsub, asked, noted):
        assert response.status_code == 200
        assert "<script>" not in response.text and "<img" not in response.text
    assert "&lt;script&gt;" in unsub.text
    assert "&lt;img src=x onerror=alert(1)&gt;" in asked.text
    assert "&lt;img src=x onerror=alert(1)&gt;" in noted.text


# ---------------------------------------------------------------- preview


@pytest.mark.parametrize(
    ("how", "status"),
    [
        ("query-admin", 200),
        ("bearer-admin", 200),
        ("signed-preview", 200),
        ("v1-preview", 200),
        ("wrong-admin", 403),
        ("no-token", 403),
        ("preview-of-other", 403),
        ("unsubscribe-token", 403),
    ],
    ids=[
        "query-admin",
        "bearer-admin",
        "signed-preview",
        "v1-preview",
        "wrong-admin",
        "no-token",
        "preview-of-other",
        "unsubscribe-token",
    ],
)
async def test_preview_access(
    client: httpx.AsyncClient, backend: FakeBackend, clock: FakeClock, how: str, status: int
) -> None:
    signer = TokenSigner([KEY])
    backend.readers[2] = "bob@lab.example"
    params: dict[str, str] = {}
    headers: dict[str, str] = {}
    if how == "query-admin":
        params["token"] = ADMIN
    elif how == "bearer-admin":
        headers["Authorization"] = f"Bearer {ADMIN}"
    elif how == "signed-preview":
        params["token"] = signer.reader_token(subscriber_id=ADA_ID, purpose="preview", now=clock())
    elif how == "v1-preview":  # an old-format preview link, until it expires
        params["token"] = v1(clock, "preview")
    elif how == "wrong-admin":
        params["token"] = ADMIN[:-1] + "X"
    elif how == "preview-of-other":
        params["token"] = signer.reader_token(subscriber_id=2, purpose="preview", now=clock())
    elif how == "unsubscribe-token":
        params["token"] = unsubscribe_token(clock)
    response = await client.get(f"/preview/{ADA}", params=params, headers=headers)
    assert response.status_code == status
    assert ("Ada's next digest" in response.text) is (status == 200)
    assert backend.calls == ([f"preview {ADA}"] if status == 200 else [])
    assert_safe_headers(response)


async def test_preview_of_an_unknown_subscriber_is_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/preview/nobody@lab.example", params={"token": ADMIN})
    assert response.status_code == 404


async def test_preview_without_an_admin_token_configured_refuses_everything(
    backend: FakeBackend, signer: TokenSigner, clock: FakeClock
) -> None:
    app = create_app(backend, signer, admin_token=None, clock=clock)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        for token in ("", "None", ADMIN):
            assert (await c.get(f"/preview/{ADA}", params={"token": token})).status_code == 403
    assert backend.calls == []


# ---------------------------------------------------------------- health, metrics, errors


async def test_healthz_ok(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"ok": True, "database": "ok"}


async def test_healthz_unhealthy_is_503(client: httpx.AsyncClient, backend: FakeBackend) -> None:
    backend.status = {"ok": False, "database": "unreachable"}
    response = await client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["database"] == "unreachable"


async def test_healthz_failure_does_not_leak_the_error_text(
    client: httpx.AsyncClient, backend: FakeBackend
) -> None:
    backend.broken = True
    response = await client.get("/healthz")
    assert response.status_code == 503
    assert response.json() == {"ok": False, "error": "StoreError"}
    assert "s3cret" not in response.text


async def test_metrics_exposes_backend_counters_and_web_requests(
    client: httpx.AsyncClient, clock: FakeClock
) -> None:
    await client.post("/unsubscribe/bad.token")
    await client.post(f"/unsubscribe/{unsubscribe_token(clock)}")
    await client.post(f"/unsubscribe/{unsubscribe_token(clock)}")
    await client.get(feedback_path(unsubscribe_token(clock)))
    await client.post(feedback_path(unsubscribe_token(clock)))
    await client.put(feedback_path(unsubscribe_token(clock)))
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert "paperpost_digests_sent_total 3\n" in response.text
    assert 'paperpost_web_requests_total{method="POST",route="unsubscribe",status="400"} 1\n' in (
        response.text
    )
    assert 'paperpost_web_requests_total{method="POST",route="unsubscribe",status="200"} 2\n' in (
        response.text
    )
    for method in ("GET", "POST"):
        sample = f'{{method="{method}",route="feedback",status="200"}} 1\n'
        assert f"paperpost_web_requests_total{sample}" in response.text
    assert 'method="PUT"' not in response.text  # 405s never reach an endpoint


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/", 404),
        ("GET", "/unsubscribe/", 404),
        ("PUT", "/unsubscribe/x.y", 405),
        ("PUT", "/feedback/x.y", 405),
        ("DELETE", "/feedback/x.y", 405),
        ("GET", "/admin", 404),
    ],
    ids=["root", "unsubscribe-no-token", "put", "put-feedback", "delete-feedback", "unknown"],
)
async def test_unknown_routes_and_methods(
    client: httpx.AsyncClient, backend: FakeBackend, method: str, path: str, status: int
) -> None:
    response = await client.request(method, path)
    assert response.status_code == status
    assert "Not found" in response.text
    assert backend.calls == []
