"""The fetcher against a real loopback HTTP server that injects faults."""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from pipeline.errors import SourceError
from pipeline.ingest.fetch import Fetcher, FetchError, FetchPolicy, is_public, politeness_group
from pipeline.sources import parse_listing
from tests.ingest_fakes import DATA, LoopbackServer, Request, gzip_bomb, serving

FEED = (DATA / "newfmt_2026_idlist_versioned.xml").read_bytes()
POLICY = FetchPolicy(
    user_agent="Paperpost-test/1 (ops@lab.example)",
    allow_private=True,
    deadline=5.0,
    host_intervals=(),
    max_bytes=200_000,
    max_decoded_bytes=1_000_000,
)


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    yield from serving({})


class FakeTime:
    """A clock that only moves when the fetcher sleeps; records every sleep."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(round(seconds, 3))
        self.now += seconds


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


@pytest.fixture
async def fetcher(fake_time: FakeTime) -> AsyncIterator[Fetcher]:
    f = Fetcher(POLICY, clock=fake_time.clock, sleep=fake_time.sleep)
    yield f
    await f.aclose()


def query(r: Request, name: str) -> str:
    return parse_qs(urlsplit(r.path).query)[name][0]


# -- success, conditional GET, compression ---------------------------------------------------------
async def test_plain_fetch_sends_user_agent_and_returns_validators(
    server: LoopbackServer, fetcher: Fetcher
) -> None:
    headers = {"ETag": '"v1"', "Last-Modified": "Mon, 20 Jul 2026 04:00:00 GMT"}
    server.serve("/feed", FEED, {"Content-Type": "application/atom+xml", **headers})
    result = await fetcher.fetch(server.url("/feed"))
    assert (result.status, result.body, result.not_modified) == (200, FEED, False)
    assert (result.etag, result.last_modified) == ('"v1"', "Mon, 20 Jul 2026 04:00:00 GMT")
    assert result.content_type == "application/atom+xml"
    sent = server.requests[0][1]
    assert sent["User-Agent"] == "Paperpost-test/1 (ops@lab.example)"
    assert "gzip" in sent["Accept-Encoding"]


async def test_conditional_get_304_is_success_without_news(
    server: LoopbackServer, fetcher: Fetcher
) -> None:
    def conditional(r: Request) -> None:
        if r.headers.get("If-None-Match") == '"v1"':
            r.send(304, b"", {"ETag": '"v1"'})
        else:
            r.send(200, FEED, {"ETag": '"v1"'})

    server.routes["/feed"] = conditional
    first = await fetcher.fetch(server.url("/feed"))
    again = await fetcher.fetch(server.url("/feed"), etag=first.etag)
    assert (again.status, again.not_modified, again.body, again.etag) == (304, True, None, '"v1"')


async def test_if_modified_since_is_sent(server: LoopbackServer, fetcher: Fetcher) -> None:
    server.serve("/feed", b"", status=304)
    stamp = "Mon, 20 Jul 2026 04:00:00 GMT"
    result = await fetcher.fetch(server.url("/feed"), last_modified=stamp)
    assert result.not_modified and result.last_modified == stamp
    assert server.requests[0][1]["If-Modified-Since"] == stamp


async def test_gzip_body_is_decompressed(server: LoopbackServer, fetcher: Fetcher) -> None:
    server.serve("/feed", gzip.compress(FEED), {"Content-Encoding": "gzip"})
    assert (await fetcher.fetch(server.url("/feed"))).body == FEED


async def test_wrong_charset_header_still_parses(server: LoopbackServer, fetcher: Fetcher) -> None:
    body = FEED.replace(b"Quan Thoi Minh Nguyen", "Quân Thới Minh Nguyễn".encode())
    server.serve("/feed", body, {"Content-Type": "application/atom+xml; charset=iso-8859-1"})
    got = await fetcher.fetch(server.url("/feed"))
    assert got.body is not None
    result = parse_listing(
        "arxiv-api", got.body, source="s", content_type=got.content_type, now=datetime.now(UTC)
    )
    assert result.papers[0].authors == ("Quân Thới Minh Nguyễn",)


# -- faults ----------------------------------------------------------------------------------------
async def test_trickle_hits_the_total_deadline(server: LoopbackServer) -> None:
    def trickle(r: Request) -> None:
        r.send_response(200)
        r.send_header("Content-Length", "1000")
        r.end_headers()
        for _ in range(1000):
            try:
                r.wfile.write(b"x")
                r.wfile.flush()
            except OSError:
                return
            time.sleep(1.0)  # the peer is slow on purpose: 1 byte/s

    server.routes["/trickle"] = trickle
    policy = FetchPolicy(allow_private=True, deadline=1.5, read_timeout=5.0)
    f = Fetcher(policy)
    try:
        with pytest.raises(SourceError, match=r"no complete answer .* within 1.5 s"):
            await f.fetch(server.url("/trickle"))
    finally:
        await f.aclose()


@pytest.mark.parametrize("announce", [True, False], ids=["content-length", "close-delimited"])
async def test_body_over_the_cap_is_refused(
    server: LoopbackServer, fetcher: Fetcher, announce: bool
) -> None:
    server.routes["/big"] = lambda r: r.send(200, b"x" * 300_000, length=announce)
    message = "announces 300000 bytes" if announce else "more than the cap of 200000 bytes"
    with pytest.raises(SourceError, match=message):
        await fetcher.fetch(server.url("/big"))


async def test_gzip_bomb_is_stopped_at_the_decompressed_cap(
    server: LoopbackServer, fetcher: Fetcher
) -> None:
    bomb = gzip_bomb(50_000_000)
    assert len(bomb) < POLICY.max_bytes  # small on the wire, 50 MB inflated
    server.serve("/bomb", bomb, {"Content-Encoding": "gzip"})
    with pytest.raises(SourceError, match="decompresses to more than the cap of 1000000"):
        await fetcher.fetch(server.url("/bomb"))


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (500, "answered 500 Internal Server Error"),
        (404, "answered 404 not found; check the source URL"),
        (410, "answered 410 gone for good"),
        (400, "answered 400 Bad Request"),
    ],
    ids=["500", "404", "410", "400"],
)
async def test_error_statuses_fail_the_source(
    server: LoopbackServer, fetcher: Fetcher, status: int, message: str
) -> None:
    server.serve("/x", b"<error/>", status=status)
    with pytest.raises(FetchError, match=message) as caught:
        await fetcher.fetch(server.url("/x"))
    assert caught.value.status == status and caught.value.body == b"<error/>"


async def test_429_with_short_retry_after_waits_once_then_succeeds(
    server: LoopbackServer, fetcher: Fetcher, fake_time: FakeTime
) -> None:
    calls: list[int] = []

    def throttled(r: Request) -> None:
        calls.append(1)
        if len(calls) == 1:
            r.send(429, b"slow down", {"Retry-After": "2"})
        else:
            r.send(200, FEED)

    server.routes["/feed"] = throttled
    result = await fetcher.fetch(server.url("/feed"))
    assert result.body == FEED
    assert fake_time.sleeps == [2.0]


async def test_503_with_long_retry_after_fails_and_host_is_left_alone(
    server: LoopbackServer, fetcher: Fetcher
) -> None:
    server.serve("/busy", b"", {"Retry-After": "120"}, status=503)
    server.serve("/other", FEED)
    with pytest.raises(FetchError, match=r"503 \(throttled; Retry-After 120 s\)") as caught:
        await fetcher.fetch(server.url("/busy"))
    assert caught.value.retry_after == 120.0
    with pytest.raises(SourceError, match="asked us to retry after 120 s"):
        await fetcher.fetch(server.url("/other"))
    assert len(server.requests) == 1


async def test_429_twice_gives_up(server: LoopbackServer, fetcher: Fetcher) -> None:
    server.serve("/feed", b"", {"Retry-After": "1"}, status=429)
    with pytest.raises(SourceError, match="still throttled after waiting"):
        await fetcher.fetch(server.url("/feed"))


async def test_connection_refused_is_a_source_error(fetcher: Fetcher) -> None:
    with pytest.raises(SourceError, match=r"could not fetch http://127\.0\.0\.1:9/"):
        await fetcher.fetch("http://127.0.0.1:9/")


# -- redirects and address checks ------------------------------------------------------------------
def redirect(r: Request) -> None:
    r.send(302, b"", {"Location": query(r, "to")})


async def test_same_origin_redirect_is_followed(server: LoopbackServer, fetcher: Fetcher) -> None:
    server.routes["/redirect"] = redirect
    server.serve("/feed", FEED)
    result = await fetcher.fetch(server.url("/redirect?to=/feed"))
    assert (result.body, result.url) == (FEED, server.url("/feed"))


@pytest.mark.parametrize(
    ("target", "address"),
    [
        ("http://127.0.0.1:{other}/feed", "127.0.0.1"),
        ("http://10.1.2.3/feed", "10.1.2.3"),
        ("http://192.168.0.1/feed", "192.168.0.1"),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254"),
        ("http://[::1]:{port}/feed", "::1"),
        ("http://[::ffff:10.0.0.1]/feed", "::ffff:10.0.0.1"),
    ],
    ids=["loopback-other-port", "private-10", "private-192", "metadata", "ipv6-loopback", "mapped"],
)
async def test_redirect_to_private_addresses_is_refused(
    server: LoopbackServer, fetcher: Fetcher, target: str, address: str
) -> None:
    server.routes["/redirect"] = redirect
    location = target.format(other=server.port + 1, port=server.port)
    with pytest.raises(SourceError, match=f"non-public address {address}"):
        await fetcher.fetch(server.url(f"/redirect?to={location}"))


async def test_loopback_url_is_refused_by_default(server: LoopbackServer) -> None:
    server.serve("/feed", FEED)
    f = Fetcher(FetchPolicy())
    try:
        for url in (server.url("/feed"), f"http://localhost:{server.port}/feed"):
            with pytest.raises(SourceError, match="non-public address"):
                await f.fetch(url)
    finally:
        await f.aclose()
    assert server.requests == []


async def test_names_resolving_to_private_addresses_are_refused() -> None:
    async def resolver(host: str, port: int) -> list[str]:
        return ["93.184.216.34", "10.0.0.7"] if host == "feeds.example.test" else []

    f = Fetcher(FetchPolicy(), resolver=resolver)
    try:
        with pytest.raises(SourceError, match=r"'feeds.example.test'.*non-public address 10.0.0.7"):
            await f.fetch("https://feeds.example.test/rss")
    finally:
        await f.aclose()


async def test_redirect_loop_is_detected(server: LoopbackServer, fetcher: Fetcher) -> None:
    server.routes["/a"] = lambda r: r.send(302, b"", {"Location": "/b"})
    server.routes["/b"] = lambda r: r.send(301, b"", {"Location": "/a"})
    with pytest.raises(SourceError, match="redirect loop"):
        await fetcher.fetch(server.url("/a"))


async def test_more_than_five_redirects_are_refused(
    server: LoopbackServer, fetcher: Fetcher
) -> None:
    def hop(r: Request) -> None:
        n = int(query(r, "n"))
        r.send(307, b"", {"Location": f"/hop?n={n + 1}"})

    server.routes["/hop"] = hop
    with pytest.raises(SourceError, match="more than 5 redirects"):
        await fetcher.fetch(server.url("/hop?n=0"))
    assert len(server.requests) == 6


@pytest.mark.parametrize(
    "location", ["file:///etc/passwd", "ftp://example.org/x", "gopher://x/"], ids=lambda x: x[:4]
)
async def test_redirect_to_other_schemes_is_refused(
    server: LoopbackServer, fetcher: Fetcher, location: str
) -> None:
    server.routes["/r"] = lambda r: r.send(302, b"", {"Location": location})
    with pytest.raises(SourceError, match="only http"):
        await fetcher.fetch(server.url("/r"))


async def test_other_schemes_are_refused(fetcher: Fetcher) -> None:
    with pytest.raises(SourceError, match="only http and https URLs are fetched, not 'ftp'"):
        await fetcher.fetch("ftp://example.org/feed.xml")


# -- politeness ------------------------------------------------------------------------------------
async def test_per_host_interval_is_respected(server: LoopbackServer, fake_time: FakeTime) -> None:
    server.serve("/feed", FEED)
    policy = FetchPolicy(allow_private=True, host_intervals=(("127.0.0.1", 3.0),))
    f = Fetcher(policy, clock=fake_time.clock, sleep=fake_time.sleep)
    try:
        for _ in range(3):
            await f.fetch(server.url("/feed"))
    finally:
        await f.aclose()
    assert fake_time.sleeps == [3.0, 3.0]


async def test_one_connection_per_host(server: LoopbackServer, fetcher: Fetcher) -> None:
    import asyncio

    lock = threading.Lock()
    state = {"active": 0, "max": 0}

    def slow(r: Request) -> None:
        with lock:
            state["active"] += 1
            state["max"] = max(state["max"], state["active"])
        time.sleep(0.05)  # the peer takes its time, so overlapping requests would show
        with lock:
            state["active"] -= 1
        r.send(200, FEED)

    server.routes["/slow"] = slow
    await asyncio.gather(*(fetcher.fetch(server.url(f"/slow?i={i}")) for i in range(4)))
    assert (len(server.requests), state["max"]) == (4, 1)


# -- local files -----------------------------------------------------------------------------------
async def test_local_paths_and_file_urls(tmp_path: Path, fetcher: Fetcher) -> None:
    path = tmp_path / "listing.xml"
    path.write_bytes(FEED)
    by_path = await fetcher.fetch(str(path))
    by_url = await fetcher.fetch(path.as_uri())
    assert by_path.body == by_url.body == FEED
    again = await fetcher.fetch(str(path), etag=by_path.etag)
    assert again.not_modified and again.body is None


async def test_missing_local_file_is_a_source_error(tmp_path: Path, fetcher: Fetcher) -> None:
    with pytest.raises(SourceError, match=r"cannot read .*missing\.xml"):
        await fetcher.fetch(str(tmp_path / "missing.xml"))


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("8.8.8.8", True),
        ("2606:4700::1111", True),
        ("127.0.0.1", False),
        ("10.0.0.1", False),
        ("100.64.0.1", False),
        ("169.254.169.254", False),
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("192.0.2.1", False),
        ("fd00::1", False),
        ("fe80::1%eth0", False),
        ("::ffff:127.0.0.1", False),
    ],
    ids=lambda v: str(v),
)
def test_is_public(address: str, public: bool) -> None:
    assert is_public(address) is public


@pytest.mark.parametrize(
    ("host", "group"),
    [
        ("export.arxiv.org", "arxiv.org"),
        ("rss.arxiv.org", "arxiv.org"),
        ("arxiv.org", "arxiv.org"),
        ("notarxiv.org", "notarxiv.org"),
        ("huggingface.co", "huggingface.co"),
    ],
    ids=["api", "rss", "apex", "lookalike", "other"],
)
def test_arxiv_hosts_share_one_politeness_slot(host: str, group: str) -> None:
    assert politeness_group(host, FetchPolicy().host_intervals) == group


@pytest.mark.parametrize(
    "url", ["http://[bad/feed", "http://example.org:99999/feed"], ids=["ipv6", "port"]
)
async def test_invalid_urls_are_source_errors(fetcher: Fetcher, url: str) -> None:
    with pytest.raises(SourceError, match="invalid URL"):
        await fetcher.fetch(url)


async def test_the_deadline_covers_all_redirect_hops(server: LoopbackServer) -> None:
    def slow_hop(r: Request) -> None:
        time.sleep(0.4)  # each hop is slow on its own, but under the deadline
        r.send(302, b"", {"Location": f"/hop?n={int(query(r, 'n')) + 1}"})

    server.routes["/hop"] = slow_hop
    f = Fetcher(FetchPolicy(allow_private=True, deadline=1.0, host_intervals=()))
    try:
        with pytest.raises(SourceError, match="within 1 s"):
            await f.fetch(server.url("/hop?n=0"))
    finally:
        await f.aclose()
    assert len(server.requests) == 3
