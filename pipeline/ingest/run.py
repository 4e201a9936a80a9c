"""Ingest every configured source into the store: fetch, parse, merge, save, record health.

One source's failure (network, HTTP status, hostile or broken document) is recorded on
that source and never stops the others. The conditional-GET validators (ETag,
Last-Modified) are advanced only after the papers are saved, so a crash between fetch and
save re-fetches next time instead of silently losing a listing. Database errors are not
caught: they stop the run (only configuration and database failures do).

New papers are stamped (``first_seen``) with the run's ``stamp``: the caller records the
run as started (committed) first and reads the stamp from the clock after that commit,
so planning can fence off what the run has not committed yet (docs/ingest.md, "Late
commits"). Each save names the ``run``; once planning has closed a run it took for dead,
the run's saves write nothing, and that source's validators are not advanced, so the
next run fetches it again.

Store calls, parsing and merging run on threads, never on the event loop (the daemon's
web endpoints share it). The read-merge-save of one listing is one store transaction
that excludes other merging writers, in this process or another (``paperpost worker``
processes ingest sources in parallel), so two sources listing the same paper merge one
after the other.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pipeline.domain import Paper
from pipeline.errors import SourceError
from pipeline.ingest.fetch import Fetcher, FetchError, FetchResult
from pipeline.ingest.merge import merge_batch
from pipeline.sources import ParseResult, parse_listing
from pipeline.sources.arxiv_api import api_error
from pipeline.sources.normalise import arxiv_id_in

__all__ = [
    "PaperStore",
    "SaveStats",
    "SourceOutcome",
    "SourceSpec",
    "SourceState",
    "fetch_papers_by_id",
    "ingest_sources",
]

log = logging.getLogger("paperpost.ingest")
ARXIV_API = "https://export.arxiv.org/api/query"
LIKED_SOURCE = "arxiv-api:liked"
_ID_LIST_CHUNK = 50


# -- the store port ------------------------------------------------------------------------------
class SourceState(Protocol):
    """Fetch state and health of one source, as the store keeps it."""

    @property
    def etag(self) -> str | None: ...
    @property
    def last_modified(self) -> str | None: ...
    @property
    def last_success(self) -> datetime | None: ...
    @property
    def consecutive_failures(self) -> int: ...
    @property
    def last_error(self) -> str | None: ...
    @property
    def entries_seen(self) -> int: ...


class SaveStats(Protocol):
    @property
    def new(self) -> int: ...
    @property
    def updated(self) -> int: ...


class PaperStore(Protocol):
    """What ingest needs from the store (``pipeline.store.Store`` implements it)."""

    def source_state(self, name: str) -> SourceState: ...

    def record_source_success(
        self,
        name: str,
        *,
        etag: str | None,
        last_modified: str | None,
        entries: int,
        now: datetime,
    ) -> None: ...

    def record_source_failure(self, name: str, *, error: str, now: datetime) -> None: ...

    def papers_by_id(self, ids: Collection[str]) -> dict[str, Paper]: ...

    def save_papers(
        self,
        papers: Sequence[Paper],
        *,
        now: datetime,
        run: int | None = None,
        merge: Callable[[dict[str, Paper]], Sequence[Paper]] | None = None,
    ) -> SaveStats:
        """Insert or replace whole records; keep ``first_seen`` of known ones; record each
        new (id, version). With ``merge``: save ``merge(stored records of the same ids)``,
        read and written in one transaction that excludes other merging writers (other
        processes too). With ``run``: nothing, and a true ``lapsed`` attribute on the
        result, when that ingest run was closed meanwhile."""


# -- configuration and outcome -------------------------------------------------------------------
@dataclass(frozen=True)
class SourceSpec:
    name: str
    kind: str  # one of pipeline.sources.SOURCE_KINDS
    url: str
    allow_private: bool = False
    page_size: int = 200  # arxiv-api: results per request (the API allows up to 2,000)
    max_entries: int = 1_000  # arxiv-api: stop paging after this many results


@dataclass(frozen=True)
class SourceOutcome:
    name: str
    ok: bool
    new: int = 0
    updated: int = 0
    entries: int = 0  # papers in the listing (after dropping skipped entries)
    skipped: int = 0
    problems: tuple[str, ...] = ()
    error: str | None = None
    not_modified: bool = False
    consecutive_failures: int = 0


@dataclass
class _Listing:
    papers: list[Paper] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    skipped: int = 0
    etag: str | None = None
    last_modified: str | None = None
    not_modified: bool = False


# -- ingest --------------------------------------------------------------------------------------
async def ingest_sources(
    store: PaperStore,
    specs: Sequence[SourceSpec],
    fetcher: Fetcher,
    *,
    now: datetime,
    failure_alert: int = 3,
    on_outcome: Callable[[SourceOutcome], None] | None = None,
    stamp: datetime | None = None,
    run: int | None = None,
) -> list[SourceOutcome]:
    """Ingest all ``specs`` concurrently (the fetcher bounds concurrency and politeness).

    Returns one outcome per spec, in order. A source failing ``failure_alert`` times in a
    row is logged at ERROR level on every further failure. ``on_outcome`` is told of each
    source as it finishes (a progress display). New papers are stamped ``stamp`` (default
    ``now``); saves name the ingest ``run``, and a source whose save finds it closed fails.
    """
    saving = _Saving(stamp or now, run)

    async def one(spec: SourceSpec) -> SourceOutcome:
        outcome = await _ingest_one(
            store, spec, fetcher, saving, now=now, failure_alert=failure_alert
        )
        if on_outcome is not None:
            on_outcome(outcome)
        return outcome

    return list(await asyncio.gather(*(one(spec) for spec in specs)))


@dataclass
class _Saving:
    """One source's read-merge-save at a time, in one run, under the run's stamp."""

    stamp: datetime
    run: int | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


LAPSED = (
    "planning took this ingest run for dead and closed it, so its papers were not saved: "
    "the listing is left to the next run"
)


async def _ingest_one(
    store: PaperStore,
    spec: SourceSpec,
    fetcher: Fetcher,
    saving: _Saving,
    *,
    now: datetime,
    failure_alert: int,
) -> SourceOutcome:
    state = await asyncio.to_thread(store.source_state, spec.name)
    try:
        try:
            listing = await _fetch_listing(spec, fetcher, state, now=now)
        except SourceError:
            raise
        except Exception as exc:  # a parser bug on a strange document: that source only
            log.exception("source %s: unexpected error while fetching or parsing", spec.name)
            raise SourceError(
                spec.name, f"unexpected {type(exc).__name__} while reading the source: {exc}"
            ) from exc
    except SourceError as exc:
        message = reason(exc)
        failures = await asyncio.to_thread(_record_failure, store, spec.name, message, now=now)
        level = logging.ERROR if failures >= failure_alert else logging.WARNING
        log.log(
            level,
            "source %s failed (%d in a row): %s",
            spec.name,
            failures,
            message,
            extra={
                "event": "source.failed",
                "source": spec.name,
                "failures": failures,
                "error": message,
            },
        )
        return SourceOutcome(name=spec.name, ok=False, error=message, consecutive_failures=failures)
    new = updated = 0
    if listing.papers:
        async with saving.lock:
            stats = await asyncio.to_thread(
                _merge_and_save,
                store,
                listing.papers,
                source=spec.name,
                now=saving.stamp,
                run=saving.run,
            )
        if _lapsed(stats):
            log.error("source %s: %s", spec.name, LAPSED)
            return SourceOutcome(name=spec.name, ok=False, error=LAPSED)
        new, updated = stats.new, stats.updated
    await asyncio.to_thread(
        store.record_source_success,
        spec.name,
        etag=listing.etag,
        last_modified=listing.last_modified,
        entries=len(listing.papers),
        now=now,
    )
    for problem in listing.problems:
        log.warning("source %s: %s", spec.name, problem)
    log.info(
        "source %s: %d entries, %d new, %d updated, %d skipped%s",
        spec.name,
        len(listing.papers),
        new,
        updated,
        listing.skipped,
        " (not modified)" if listing.not_modified else "",
        extra={
            "event": "source.fetched",
            "source": spec.name,
            "entries": len(listing.papers),
            "new": new,
            "updated": updated,
            "skipped": listing.skipped,
            "not_modified": listing.not_modified,
        },
    )
    return SourceOutcome(
        name=spec.name,
        ok=True,
        new=new,
        updated=updated,
        entries=len(listing.papers),
        skipped=listing.skipped,
        problems=tuple(listing.problems),
        not_modified=listing.not_modified,
    )


def _record_failure(store: PaperStore, name: str, error: str, *, now: datetime) -> int:
    """Record a failed fetch; how many times in a row the source has now failed."""
    store.record_source_failure(name, error=error, now=now)
    return store.source_state(name).consecutive_failures


def _merge_and_save(
    store: PaperStore, papers: list[Paper], *, source: str, now: datetime, run: int | None
) -> SaveStats:
    """Merge ``papers`` into the stored records of the same ids and save the result, in
    one transaction: a worker ingesting another source that lists the same papers merges
    before or after this one, never in between."""

    def merge(stored: dict[str, Paper]) -> list[Paper]:
        return merge_batch(stored, papers, source=source)

    if run is None:  # outside a recorded run (a store without runs)
        return store.save_papers(papers, now=now, merge=merge)
    return store.save_papers(papers, now=now, run=run, merge=merge)


def _lapsed(stats: SaveStats) -> bool:
    """Whether a save wrote nothing because its run had been closed (a store without
    runs never says so)."""
    return bool(getattr(stats, "lapsed", False))


async def _fetch_listing(
    spec: SourceSpec, fetcher: Fetcher, state: SourceState, *, now: datetime
) -> _Listing:
    if spec.kind == "arxiv-api" and urlsplit(spec.url).scheme in ("http", "https"):
        return await _fetch_api_pages(spec, fetcher, now=now)
    fetched = await _fetch(
        spec, fetcher, spec.url, now=now, etag=state.etag, last_modified=state.last_modified
    )
    if fetched.not_modified or fetched.body is None:
        return _Listing(etag=fetched.etag, last_modified=fetched.last_modified, not_modified=True)
    result = await asyncio.to_thread(_parse, spec, fetched, now=now)
    return _Listing(
        papers=result.papers,
        problems=result.problems,
        skipped=result.skipped,
        etag=fetched.etag,
        last_modified=fetched.last_modified,
    )


async def _fetch(
    spec: SourceSpec,
    fetcher: Fetcher,
    url: str,
    *,
    now: datetime,
    etag: str | None = None,
    last_modified: str | None = None,
) -> FetchResult:
    try:
        return await fetcher.fetch(
            url, etag=etag, last_modified=last_modified, allow_private=spec.allow_private
        )
    except FetchError as exc:
        # The arXiv API explains a bad query in an Atom error feed served with HTTP 400.
        explained = api_error(exc.body) if spec.kind == "arxiv-api" and exc.body else None
        if explained:
            raise SourceError(
                spec.name, f"the arXiv API refused {url} (HTTP {exc.status}): {explained}"
            ) from exc
        raise SourceError(spec.name, reason(exc)) from exc
    except SourceError as exc:
        if exc.source == spec.name:
            raise
        raise SourceError(spec.name, reason(exc)) from exc


def reason(exc: SourceError) -> str:
    """The message of ``exc`` without its ``source '...': `` prefix."""
    text = str(exc)
    prefix = f"source {exc.source!r}: "
    return text[len(prefix) :] if text.startswith(prefix) else text


def _parse(spec: SourceSpec, fetched: FetchResult, *, now: datetime) -> ParseResult:
    assert fetched.body is not None
    return parse_listing(
        spec.kind, fetched.body, source=spec.name, content_type=fetched.content_type, now=now
    )


def page_url(url: str, *, start: int, max_results: int) -> str:
    """``url`` with its ``start`` and ``max_results`` query parameters set."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)]
    query = [(k, v) for k, v in query if k not in ("start", "max_results")]
    query += [("start", str(start)), ("max_results", str(max_results))]
    return urlunsplit(parts._replace(query=urlencode(query, safe=":,")))


async def _fetch_api_pages(spec: SourceSpec, fetcher: Fetcher, *, now: datetime) -> _Listing:
    listing = _Listing()
    seen: dict[str, Paper] = {}
    start = 0
    while start < spec.max_entries:
        size = min(spec.page_size, spec.max_entries - start)
        url = page_url(spec.url, start=start, max_results=size)
        fetched = await _fetch(spec, fetcher, url, now=now)
        result = await asyncio.to_thread(_parse, spec, fetched, now=now)
        listing.problems.extend(result.problems)
        listing.skipped += result.skipped
        for paper in result.papers:
            seen.setdefault(paper.id, paper)
        got = len(result.papers) + result.skipped
        total = result.total_results if result.total_results is not None else start + got
        start += got
        if start >= total:
            break
        if got == 0:
            listing.problems.append(
                f"the API returned an empty page at start={start} of {total} results; "
                "the rest will be read next run"
            )
            break
    listing.papers = list(seen.values())
    return listing


# -- liked papers ----------------------------------------------------------------------------------
async def fetch_papers_by_id(
    store: PaperStore,
    ids: Sequence[str],
    fetcher: Fetcher,
    *,
    now: datetime,
    api_url: str = ARXIV_API,
    allow_private: bool | None = None,
    stamp: datetime | None = None,
    run: int | None = None,
) -> list[str]:
    """Fetch arXiv metadata of ``ids`` not already stored (e.g. papers a subscriber likes).

    Uses the API's ``id_list`` in batches of 50. Returns the canonical ids it stored. A
    batch that fails is logged and skipped; the others still go through. ``stamp`` and
    ``run`` are :func:`ingest_sources`'.
    """
    wanted: list[str] = []
    for raw in ids:
        found = arxiv_id_in(raw)
        if found is None:
            log.warning("liked paper %r is not an arXiv id; skipped", raw)
        elif found[0] not in wanted:
            wanted.append(found[0])
    known = await asyncio.to_thread(store.papers_by_id, wanted)
    missing = [i for i in wanted if i not in known]
    spec = SourceSpec(name=LIKED_SOURCE, kind="arxiv-api", url=api_url)
    stored: list[str] = []
    for first in range(0, len(missing), _ID_LIST_CHUNK):
        chunk = missing[first : first + _ID_LIST_CHUNK]
        query = urlencode({"id_list": ",".join(chunk), "max_results": len(chunk)}, safe=",/")
        url = f"{api_url}{'&' if '?' in api_url else '?'}{query}"
        try:
            fetched = await fetcher.fetch(url, allow_private=allow_private)
            if fetched.body is None:
                continue
            result = await asyncio.to_thread(_parse, spec, fetched, now=now)
        except SourceError as exc:
            log.warning("fetching liked papers %s failed: %s", ",".join(chunk), exc)
            continue
        papers = [p for p in result.papers if p.id in chunk]
        stats = await asyncio.to_thread(
            _merge_and_save, store, papers, source=LIKED_SOURCE, now=stamp or now, run=run
        )
        if _lapsed(stats):
            log.warning("liked papers %s: %s", ",".join(chunk), LAPSED)
            break
        stored.extend(p.id for p in papers)
    return stored
