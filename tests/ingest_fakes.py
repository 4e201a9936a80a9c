"""Test helpers for ingest: an in-memory PaperStore, arXiv listing builders, and a real
loopback HTTP server (threaded, port 0) whose routes inject faults."""

from __future__ import annotations

import contextlib
import gzip
import threading
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from pipeline.domain import Paper

DATA = Path(__file__).resolve().parent / "data"


# -- in-memory store ---------------------------------------------------------------------------
@dataclass(frozen=True)
class MemoryState:
    name: str
    etag: str | None = None
    last_modified: str | None = None
    last_success: datetime | None = None
    consecutive_failures: int = 0
    last_error: str | None = None
    entries_seen: int = 0


@dataclass(frozen=True)
class MemoryStats:
    new: int
    updated: int


@dataclass
class MemoryStore:
    """The PaperStore port in memory: enough to test ingest without a database."""

    papers: dict[str, Paper] = field(default_factory=dict)
    versions: dict[str, set[int]] = field(default_factory=dict)
    states: dict[str, MemoryState] = field(default_factory=dict)
    fail_saves: bool = False

    def source_state(self, name: str) -> MemoryState:
        return self.states.get(name, MemoryState(name=name))

    def record_source_success(
        self, name: str, *, etag: str | None, last_modified: str | None, entries: int, now: datetime
    ) -> None:
        old = self.source_state(name)
        self.states[name] = replace(
            old,
            etag=etag,
            last_modified=last_modified,
            last_success=now,
            consecutive_failures=0,
            last_error=None,
            entries_seen=old.entries_seen + entries,
        )

    def record_source_failure(self, name: str, *, error: str, now: datetime) -> None:
        old = self.source_state(name)
        self.states[name] = replace(
            old, consecutive_failures=old.consecutive_failures + 1, last_error=error
        )

    def papers_by_id(self, ids: Collection[str]) -> dict[str, Paper]:
        return {i: self.papers[i] for i in ids if i in self.papers}

    def save_papers(
        self,
        papers: Sequence[Paper],
        *,
        now: datetime,
        merge: Callable[[dict[str, Paper]], Sequence[Paper]] | None = None,
    ) -> MemoryStats:
        if self.fail_saves:
            from pipeline.errors import StoreError

            raise StoreError("the test store refuses writes")
        if merge is not None:
            papers = merge(self.papers_by_id([p.id for p in papers]))
        new = updated = 0
        for paper in papers:
            old = self.papers.get(paper.id)
            if old is None:
                new += 1
                paper = replace(paper, first_seen=paper.first_seen or now)
            else:
                paper = replace(paper, first_seen=old.first_seen)
                updated += paper != old
            self.papers[paper.id] = paper
            if paper.version is not None:
                self.versions.setdefault(paper.id, set()).add(paper.version)
        return MemoryStats(new=new, updated=updated)

    def paper_versions(self, paper_id: str) -> list[int]:
        return sorted(self.versions.get(paper_id, ()))


# -- arXiv listings in the real layout ---------------------------------------------------------
@dataclass(frozen=True)
class Item:
    arxiv_id: str
    version: int = 1
    title: str = "A Paper"
    abstract: str = "An abstract."
    authors: tuple[str, ...] = ("Ada Lovelace", "Alan Turing")
    categories: tuple[str, ...] = ("cs.LG",)
    announce_type: str = "new"
    doi: str | None = None
    journal_ref: str | None = None


def arxiv_rss_listing(items: Sequence[Item], *, day: datetime, channel: str = "cs.LG") -> bytes:
    """An rss.arxiv.org RSS 2.0 listing (item layout described in tests/data/PROVENANCE.md)."""
    date = format_datetime(day)
    parts = [
        "<?xml version='1.0' encoding='UTF-8'?>\n",
        '<rss xmlns:arxiv="http://arxiv.org/schemas/atom" '
        'xmlns:dc="http://purl.org/dc/elements/1.1/" '
        'xmlns:atom="http://www.w3.org/2005/Atom" '
        'xmlns:content="http://purl.org/rss/1.0/modules/content/" version="2.0">\n',
        f"  <channel>\n    <title>{channel} updates on arXiv.org</title>\n",
        f"    <link>http://rss.arxiv.org/rss/{channel}</link>\n",
        f"    <description>{channel} updates on the arXiv.org e-print archive.</description>\n",
        f"    <language>en-us</language>\n    <pubDate>{date}</pubDate>\n",
        "    <skipDays>\n      <day>Saturday</day>\n      <day>Sunday</day>\n    </skipDays>\n",
    ]
    for it in items:
        vid = f"{it.arxiv_id}v{it.version}"
        parts.append(
            "    <item>\n"
            f"      <title>{escape(it.title)}</title>\n"
            f"      <link>https://arxiv.org/abs/{it.arxiv_id}</link>\n"
            f"      <description>arXiv:{vid} Announce Type: {it.announce_type} \n"
            f"Abstract: {escape(it.abstract)}</description>\n"
            f'      <guid isPermaLink="false">oai:arXiv.org:{vid}</guid>\n'
            + "".join(f"      <category>{c}</category>\n" for c in it.categories)
            + f"      <pubDate>{date}</pubDate>\n"
            f"      <arxiv:announce_type>{it.announce_type}</arxiv:announce_type>\n"
            "      <dc:rights>http://creativecommons.org/licenses/by/4.0/</dc:rights>\n"
            f"      <dc:creator>{escape(', '.join(it.authors))}</dc:creator>\n"
            + (
                f"      <arxiv:journal_reference>{escape(it.journal_ref)}"
                "</arxiv:journal_reference>\n"
                if it.journal_ref
                else ""
            )
            + (f"      <arxiv:DOI>{it.doi}</arxiv:DOI>\n" if it.doi else "")
            + "    </item>\n"
        )
    parts.append("  </channel>\n</rss>\n")
    return "".join(parts).encode("utf-8")


def arxiv_api_page(items: Sequence[Item], *, total: int, start: int) -> bytes:
    """An export.arxiv.org/api/query Atom page (layout of the newfmt_2026 captures)."""
    entries = []
    for it in items:
        vid = f"{it.arxiv_id}v{it.version}"
        entries.append(
            "  <entry>\n"
            f"    <id>http://arxiv.org/abs/{vid}</id>\n"
            f"    <title>{escape(it.title)}</title>\n"
            "    <updated>2026-04-12T22:09:25Z</updated>\n"
            f'    <link href="https://arxiv.org/abs/{vid}" rel="alternate" type="text/html"/>\n'
            f'    <link href="https://arxiv.org/pdf/{vid}" rel="related" '
            'type="application/pdf" title="pdf"/>\n'
            f"    <summary>{escape(it.abstract)}</summary>\n"
            + "".join(
                f'    <category term="{c}" scheme="http://arxiv.org/schemas/atom"/>\n'
                for c in it.categories
            )
            + "    <published>2026-04-10T10:00:00Z</published>\n"
            f'    <arxiv:primary_category term="{it.categories[0]}"/>\n'
            + "".join(
                f"    <author>\n      <name>{escape(a)}</name>\n    </author>\n" for a in it.authors
            )
            + "  </entry>\n"
        )
    return (
        "<?xml version='1.0' encoding='UTF-8'?>\n"
        '<feed xmlns:opensearch="http://a9.com/-/spec/opensearch/1.1/" '
        'xmlns:arxiv="http://arxiv.org/schemas/atom" xmlns="http://www.w3.org/2005/Atom">\n'
        "  <id>https://arxiv.org/api/test</id>\n  <title>arXiv Query</title>\n"
        "  <updated>2026-04-12T22:09:26Z</updated>\n"
        f"  <opensearch:itemsPerPage>{len(items)}</opensearch:itemsPerPage>\n"
        f"  <opensearch:totalResults>{total}</opensearch:totalResults>\n"
        f"  <opensearch:startIndex>{start}</opensearch:startIndex>\n"
        + "".join(entries)
        + "</feed>\n"
    ).encode("utf-8")


# -- loopback HTTP server with fault injection ---------------------------------------------------
Handler = Callable[["Request"], None]


class Request(BaseHTTPRequestHandler):
    server: LoopbackServer  # type: ignore[assignment]
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        self.server.record(self)
        route = self.server.routes.get(path)
        if route is None:
            self.send(404, b"no such route")
            return
        route(self)

    def send(
        self,
        status: int,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        *,
        length: bool = True,
    ) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if length:
            self.send_header("Content-Length", str(len(body)))
        else:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class LoopbackServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Request)
        self.routes: dict[str, Handler] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        self._lock = threading.Lock()
        self.active = 0
        self.max_active = 0

    def record(self, request: Request) -> None:
        with self._lock:
            self.requests.append((request.path, dict(request.headers.items())))

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def serve(
        self, path: str, body: bytes, headers: dict[str, str] | None = None, status: int = 200
    ) -> None:
        self.routes[path] = lambda r: r.send(status, body, headers)


@dataclass
class Running:
    server: LoopbackServer
    thread: threading.Thread


def start_server() -> Running:
    server = LoopbackServer()
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    return Running(server, thread)


def stop_server(running: Running) -> None:
    running.server.shutdown()
    running.server.server_close()
    running.thread.join(timeout=5)


def serving(routes: dict[str, Handler]) -> Iterator[LoopbackServer]:
    running = start_server()
    running.server.routes.update(routes)
    try:
        yield running.server
    finally:
        stop_server(running)


def gzip_bomb(size: int) -> bytes:
    return gzip.compress(b"\0" * size, compresslevel=9)
