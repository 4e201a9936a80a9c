"""ingest_sources and fetch_papers_by_id end to end: loopback HTTP, local files, and the
same tests against the in-memory store, the real Store on SQLite, and on PostgreSQL."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from pipeline.errors import StoreError
from pipeline.ingest.fetch import Fetcher, FetchPolicy
from pipeline.ingest.run import SourceSpec, fetch_papers_by_id, ingest_sources, page_url
from tests.ingest_fakes import (
    DATA,
    Item,
    LoopbackServer,
    MemoryStore,
    Request,
    arxiv_api_page,
    arxiv_rss_listing,
    serving,
)

NOW = datetime(2026, 7, 20, 6, 0, tzinfo=UTC)
DAY = datetime(2026, 7, 20, 4, 0, tzinfo=UTC)
HF = DATA / "hf_api_daily_papers_2026-07-31_5papers.json"
POLICY = FetchPolicy(allow_private=True, host_intervals=(), deadline=10.0)


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    if request.param == "memory":
        yield MemoryStore()
        return
    from pipeline.store import Store

    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'ingest.db'}"
    else:
        url = request.getfixturevalue("pg_url")
    real = Store.open(url, auto_upgrade=True)
    yield real
    real.close()


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    yield from serving({})


@pytest.fixture
async def fetcher() -> AsyncIterator[Fetcher]:
    f = Fetcher(POLICY)
    yield f
    await f.aclose()


def Spec(*args: Any, **kwargs: Any) -> SourceSpec:
    """A source spec that opts into loopback addresses (the test server)."""
    return SourceSpec(*args, allow_private=True, **kwargs)


def listing(*items: Item, day: datetime = DAY) -> bytes:
    return arxiv_rss_listing(items, day=day)


ITEMS = (
    Item("2607.30001", title="Diffusion models"),
    Item("2607.30002", title="Preference optimization", categories=("cs.CL", "cs.LG")),
    Item(
        "2607.30003", title="Cross-listed", announce_type="cross", categories=("stat.ML", "cs.LG")
    ),
)


async def test_local_listing_then_unchanged_file_is_not_modified(
    store: Any, fetcher: Fetcher, tmp_path: Path
) -> None:
    path = tmp_path / "cs.LG.xml"
    path.write_bytes(listing(*ITEMS))
    spec = Spec(name="arxiv-cs-lg", kind="arxiv-rss", url=str(path))
    [first] = await ingest_sources(store, [spec], fetcher, now=NOW)
    assert (first.ok, first.new, first.updated, first.entries) == (True, 3, 0, 3)
    [again] = await ingest_sources(store, [spec], fetcher, now=NOW + timedelta(hours=1))
    assert (again.ok, again.not_modified, again.new, again.entries) == (True, True, 0, 0)
    paper = store.papers_by_id(["2607.30002"])["2607.30002"]
    assert paper.categories == ("cs.CL", "cs.LG") and paper.sources == ("arxiv-cs-lg",)
    assert paper.first_seen == NOW
    state = store.source_state("arxiv-cs-lg")
    assert (state.entries_seen, state.consecutive_failures, state.etag is not None) == (3, 0, True)


async def test_v1_then_v2_is_a_new_version_not_a_new_paper(
    store: Any, fetcher: Fetcher, server: LoopbackServer
) -> None:
    spec = Spec(name="arxiv-cs-lg", kind="arxiv-rss", url=server.url("/rss/cs.LG"))
    server.serve("/rss/cs.LG", listing(Item("2607.30001", version=1, title="First take")))
    [one] = await ingest_sources(store, [spec], fetcher, now=NOW)
    later = DAY + timedelta(days=2)
    server.serve(
        "/rss/cs.LG",
        listing(
            Item("2607.30001", version=2, title="Second take", announce_type="replace"), day=later
        ),
    )
    [two] = await ingest_sources(store, [spec], fetcher, now=NOW + timedelta(days=2))
    assert (one.new, two.new, two.updated) == (1, 0, 1)
    paper = store.papers_by_id(["2607.30001"])["2607.30001"]
    assert (paper.version, paper.title, paper.announce_type) == (2, "Second take", "replace")
    assert paper.first_seen == NOW and paper.published == DAY
    assert store.paper_versions("2607.30001") == [1, 2]


@pytest.mark.parametrize("hf_first", [False, True], ids=["arxiv-then-hf", "hf-then-arxiv"])
async def test_same_paper_in_arxiv_and_hf_is_one_record(
    store: Any, fetcher: Fetcher, tmp_path: Path, hf_first: bool
) -> None:
    rss = tmp_path / "cs.CL.xml"
    rss.write_bytes(
        listing(Item("2607.27958", title="Sigma-Mem (arXiv title)", categories=("cs.CL",)))
    )
    arxiv = Spec(name="arxiv-cs-cl", kind="arxiv-rss", url=str(rss))
    hf = Spec(name="hf", kind="hf-daily", url=str(HF))
    order = [hf, arxiv] if hf_first else [arxiv, hf]
    for spec in order:
        [outcome] = await ingest_sources(store, [spec], fetcher, now=NOW)
        assert outcome.ok
    paper = store.papers_by_id(["2607.27958"])["2607.27958"]
    assert paper.title == "Sigma-Mem (arXiv title)"
    assert paper.categories == ("cs.CL",)
    assert (paper.upvotes, paper.github_repo) == (11, "https://github.com/declare-lab/sigma-mem")
    assert set(paper.sources) == {"arxiv-cs-cl", "hf"}
    assert len(store.papers_by_id(["2607.23193", "2607.28582", "2607.27958"])) == 3


async def test_one_failing_source_never_stops_the_others(
    store: Any, fetcher: Fetcher, server: LoopbackServer, tmp_path: Path
) -> None:
    good = tmp_path / "good.xml"
    good.write_bytes(listing(*ITEMS))
    server.serve("/gone", b"", status=410)
    server.serve("/boom", b"oops", status=500)
    server.serve("/evil", b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "b">]><rss/>')
    server.serve("/junk", b"<html>not a feed</html>")
    specs = [
        Spec(name="gone", kind="feed", url=server.url("/gone")),
        Spec(name="good", kind="arxiv-rss", url=str(good)),
        Spec(name="boom", kind="arxiv-rss", url=server.url("/boom")),
        Spec(name="evil", kind="feed", url=server.url("/evil")),
        Spec(name="junk", kind="feed", url=server.url("/junk")),
    ]
    outcomes = await ingest_sources(store, specs, fetcher, now=NOW)
    assert [(o.name, o.ok) for o in outcomes] == [
        ("gone", False),
        ("good", True),
        ("boom", False),
        ("evil", False),
        ("junk", False),
    ]
    errors = {o.name: o.error or "" for o in outcomes}
    assert "answered 410 gone for good" in errors["gone"]
    assert "answered 500" in errors["boom"]
    assert "declares XML entities" in errors["evil"]
    assert "not an RSS or Atom feed" in errors["junk"]
    assert outcomes[1].new == 3
    await ingest_sources(store, specs, fetcher, now=NOW + timedelta(hours=1))
    state = store.source_state("boom")
    assert state.consecutive_failures == 2 and "answered 500" in (state.last_error or "")
    assert store.source_state("good").consecutive_failures == 0


async def test_repeated_failures_are_logged_as_errors(
    store: Any, fetcher: Fetcher, server: LoopbackServer, caplog: pytest.LogCaptureFixture
) -> None:
    server.serve("/boom", b"", status=502)
    spec = Spec(name="boom", kind="feed", url=server.url("/boom"))
    with caplog.at_level(logging.WARNING, logger="pipeline.ingest.run"):
        for hour in range(3):
            await ingest_sources(
                store, [spec], fetcher, now=NOW + timedelta(hours=hour), failure_alert=3
            )
    levels = [r.levelname for r in caplog.records if "source boom failed" in r.getMessage()]
    assert levels == ["WARNING", "WARNING", "ERROR"]


async def test_validators_advance_only_after_papers_are_stored(
    fetcher: Fetcher, server: LoopbackServer
) -> None:
    store = MemoryStore(fail_saves=True)
    server.serve("/rss", listing(*ITEMS), {"ETag": '"today"'})
    spec = Spec(name="arxiv", kind="arxiv-rss", url=server.url("/rss"))
    with pytest.raises(StoreError, match="refuses writes"):
        await ingest_sources(store, [spec], fetcher, now=NOW)
    assert store.source_state("arxiv").etag is None


async def test_empty_weekend_listing_is_success(store: Any, fetcher: Fetcher) -> None:
    path = DATA / "rss_arxiv_org_rss_cs_empty_weekend_2026-03-29.xml"
    spec = Spec(name="arxiv-cs", kind="arxiv-rss", url=str(path))
    [outcome] = await ingest_sources(store, [spec], fetcher, now=NOW)
    assert (outcome.ok, outcome.entries, outcome.problems) == (True, 0, ())
    assert store.source_state("arxiv-cs").last_success == NOW


# -- arXiv API paging, errors, liked papers ---------------------------------------------------
API_ITEMS = [Item(f"2604.1000{i}", title=f"Result {i}") for i in range(5)]


def api_route(server: LoopbackServer) -> list[int]:
    starts: list[int] = []

    def page(r: Request) -> None:
        q = parse_qs(urlsplit(r.path).query)
        start, size = int(q["start"][0]), int(q["max_results"][0])
        starts.append(start)
        body = arxiv_api_page(API_ITEMS[start : start + size], total=len(API_ITEMS), start=start)
        r.send(200, body, {"Content-Type": "application/atom+xml"})

    server.routes["/api/query"] = page
    return starts


@pytest.mark.parametrize(
    ("page_size", "max_entries", "starts", "count"),
    [(2, 100, [0, 2, 4], 5), (2, 3, [0, 2], 3), (10, 100, [0], 5)],
    ids=["all-pages", "capped", "one-page"],
)
async def test_api_paging(
    store: Any,
    fetcher: Fetcher,
    server: LoopbackServer,
    page_size: int,
    max_entries: int,
    starts: list[int],
    count: int,
) -> None:
    seen = api_route(server)
    url = server.url("/api/query?search_query=cat:cs.LG&sortBy=submittedDate")
    spec = Spec("q", "arxiv-api", url, page_size=page_size, max_entries=max_entries)
    [outcome] = await ingest_sources(store, [spec], fetcher, now=NOW)
    assert (outcome.ok, outcome.new, seen) == (True, count, starts)
    assert "search_query=cat:cs.LG" in server.requests[0][0]


def test_page_url_replaces_paging_parameters() -> None:
    url = "https://export.arxiv.org/api/query?search_query=cat:cs.LG&start=50&max_results=9"
    assert page_url(url, start=100, max_results=200) == (
        "https://export.arxiv.org/api/query?search_query=cat:cs.LG&start=100&max_results=200"
    )


async def test_api_error_feed_with_http_400_is_a_clear_source_error(
    store: Any, fetcher: Fetcher, server: LoopbackServer
) -> None:
    body = (DATA / "newfmt_2026_error_http400_bad_id.xml").read_bytes()
    server.serve("/api/query", body, {"Content-Type": "application/atom+xml"}, status=400)
    spec = Spec("q", "arxiv-api", server.url("/api/query?id_list=abc"))
    [outcome] = await ingest_sources(store, [spec], fetcher, now=NOW)
    assert not outcome.ok
    assert "(HTTP 400): incorrect id format for abc" in (outcome.error or "")


async def test_fetch_papers_by_id_fetches_only_missing_ids(
    store: Any, fetcher: Fetcher, server: LoopbackServer, tmp_path: Path
) -> None:
    known = tmp_path / "known.xml"
    known.write_bytes(listing(Item("2607.30001")))
    await ingest_sources(store, [Spec("a", "arxiv-rss", str(known))], fetcher, now=NOW)
    body = (DATA / "newfmt_2026_idlist_versioned.xml").read_bytes()
    server.serve("/api/query", body, {"Content-Type": "application/atom+xml"})
    stored = await fetch_papers_by_id(
        store,
        ["2104.12255v1", "2607.30001", "not an id"],
        fetcher,
        now=NOW,
        api_url=server.url("/api/query"),
    )
    assert stored == ["2104.12255"]
    [(path, _)] = server.requests
    assert "id_list=2104.12255&" in path
    paper = store.papers_by_id(["2104.12255"])["2104.12255"]
    assert (paper.title, paper.categories, paper.sources) == ("0", ("cs.CR",), ("arxiv-api:liked",))


async def test_fetch_papers_by_id_survives_a_failing_batch(
    store: Any, fetcher: Fetcher, server: LoopbackServer
) -> None:
    server.serve("/api/query", b"", status=503)
    stored = await fetch_papers_by_id(
        store, ["2104.12255"], fetcher, now=NOW, api_url=server.url("/api/query")
    )
    assert stored == []


async def test_a_parser_bug_on_one_source_is_recorded_and_others_go_on(
    store: Any, fetcher: Fetcher, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pipeline.ingest.run as run

    real = run.parse_listing

    def buggy(kind: str, body: bytes, *, source: str, **kwargs: Any) -> Any:
        if source == "buggy":
            raise KeyError("surprise")
        return real(kind, body, source=source, **kwargs)

    monkeypatch.setattr(run, "parse_listing", buggy)
    path = tmp_path / "l.xml"
    path.write_bytes(listing(*ITEMS))
    specs = [Spec("buggy", "arxiv-rss", str(path)), Spec("fine", "arxiv-rss", str(path))]
    bad, good = await ingest_sources(store, specs, fetcher, now=NOW)
    assert (bad.ok, good.ok, good.new) == (False, True, 3)
    assert bad.error == "unexpected KeyError while reading the source: 'surprise'"
    assert store.source_state("buggy").consecutive_failures == 1
