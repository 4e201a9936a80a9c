"""Ingest benchmark: a 5,000-item arXiv RSS listing from a loopback HTTP server.

Measures, each scenario in a fresh subprocess (so peak RSS is the scenario's own):

* ``feedparser``   feedparser alone on the listing (the reference the issue quotes)
* ``parse``        ``parse_listing`` alone (safety pre-check + parse + normalise)
* ``sqlite``       fetch + parse + normalise + merge + store on a fresh SQLite file
* ``postgres``     the same on PostgreSQL (127.0.0.1:5432, db ``test``, fresh schema)
* ``refetch``      a second ingest of the unchanged listing (conditional GET -> 304)
* ``hostile``      feedparser alone vs ``parse_listing`` on entity-expansion documents

Rerun: ``.venv/bin/python bench/ingest.py`` (``--runs N``, ``--items N``). Results are
recorded in bench/INGEST.md. Titles and abstracts are real arXiv metadata from
bench/data/arxiv_cs_dev_2025.jsonl when present (else synthetic text).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from xml.sax.saxutils import escape

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.progress import Progress, progress_for  # noqa: E402

EVAL = ROOT / "bench" / "data" / "arxiv_cs_dev_2025.jsonl"
PG_BASE = os.environ.get("PAPERPOST_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
NOW = datetime(2025, 11, 20, 6, 0, tzinfo=UTC)
DAY = datetime(2025, 11, 20, 5, 0, tzinfo=UTC)
SCENARIOS = ("feedparser", "parse", "sqlite", "postgres", "refetch")


def corpus() -> list[dict[str, object]]:
    if EVAL.exists():
        with EVAL.open(encoding="utf-8") as fh:
            return [json.loads(line) for line in fh]
    words = [
        "diffusion",
        "transformer",
        "preference",
        "optimisation",
        "benchmark",
        "agents",
        "retrieval",
    ]
    return [
        {
            "title": f"On {words[i % 7]} and {words[(i * 3) % 7]} {i}",
            "abstract": " ".join(words[(i + k) % 7] for k in range(150)),
            "categories": ["cs.LG", "cs.CL"],
        }
        for i in range(2000)
    ]


def listing(items: int) -> bytes:
    """An rss.arxiv.org RSS 2.0 listing of ``items`` entries (real layout)."""
    papers = corpus()
    date = format_datetime(DAY)
    kinds = ("new", "new", "new", "cross", "replace", "replace-cross")
    out = [
        "<?xml version='1.0' encoding='UTF-8'?>\n"
        '<rss xmlns:arxiv="http://arxiv.org/schemas/atom" '
        'xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:atom="http://www.w3.org/2005/Atom" '
        'xmlns:content="http://purl.org/rss/1.0/modules/content/" version="2.0">\n<channel>\n'
        "<title>cs updates on arXiv.org</title>\n<link>http://rss.arxiv.org/rss/cs</link>\n"
        "<description>cs updates on the arXiv.org e-print archive.</description>\n"
        f"<language>en-us</language>\n<pubDate>{date}</pubDate>\n"
    ]
    for i in range(items):
        p = papers[i % len(papers)]
        ident = f"2511.{10000 + i:05d}"
        kind = kinds[i % len(kinds)]
        version = 1 if kind in ("new", "cross") else 2
        cats = list(p.get("categories") or ["cs.LG"])  # type: ignore[call-overload]
        out.append(
            "<item>\n"
            f"<title>{escape(str(p['title']))}</title>\n"
            f"<link>https://arxiv.org/abs/{ident}</link>\n"
            f"<description>arXiv:{ident}v{version} Announce Type: {kind} \n"
            f"Abstract: {escape(str(p['abstract']))}</description>\n"
            f'<guid isPermaLink="false">oai:arXiv.org:{ident}v{version}</guid>\n'
            + "".join(f"<category>{c}</category>\n" for c in cats)
            + f"<pubDate>{date}</pubDate>\n"
            f"<arxiv:announce_type>{kind}</arxiv:announce_type>\n"
            "<dc:rights>http://creativecommons.org/licenses/by/4.0/</dc:rights>\n"
            f"<dc:creator>Author {i} One, Author {i} Two, Author {i} Three</dc:creator>\n"
            "</item>\n"
        )
    out.append("</channel>\n</rss>\n")
    return "".join(out).encode("utf-8")


class _Handler(BaseHTTPRequestHandler):
    body = b""
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        if self.headers.get("If-None-Match") == '"bench"':
            self.send_response(304)
            self.send_header("ETag", '"bench"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/rss+xml; charset=utf-8")
        self.send_header("ETag", '"bench"')
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def serve(body: bytes) -> tuple[ThreadingHTTPServer, str]:
    _Handler.body = body
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/rss/cs"


class TimedStore:
    """Wraps the store and adds up the seconds spent in each of its methods."""

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.seconds: dict[str, float] = {}

    def __getattr__(self, name: str) -> object:
        method = getattr(self.inner, name)

        def timed(*args: object, **kwargs: object) -> object:
            t = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t

        return timed


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- one scenario (child process) --------------------------------------------------------------
def child(scenario: str, items: int) -> dict[str, float]:
    body = listing(items)
    import feedparser

    from pipeline.ingest.fetch import Fetcher, FetchPolicy
    from pipeline.ingest.run import SourceSpec, ingest_sources
    from pipeline.sources import parse_listing
    from pipeline.store import Store

    base = rss_mb()
    if scenario == "feedparser":
        import io

        t, cpu = time.perf_counter(), time.process_time()
        parsed = feedparser.parse(io.BytesIO(body))
        elapsed, cpu = time.perf_counter() - t, time.process_time() - cpu
        assert len(parsed.entries) == items
        return {"seconds": elapsed, "cpu": cpu, "items": items, "peak_mb": rss_mb() - base}
    if scenario == "parse":
        t, cpu = time.perf_counter(), time.process_time()
        result = parse_listing("arxiv-rss", body, source="bench", now=NOW)
        elapsed, cpu = time.perf_counter() - t, time.process_time() - cpu
        assert len(result.papers) == items
        return {"seconds": elapsed, "cpu": cpu, "items": items, "peak_mb": rss_mb() - base}

    server, url = serve(body)
    databases = contextlib.ExitStack()  # the fresh PostgreSQL schema, dropped at the end
    if scenario == "postgres":
        from tests.pgschema import fresh_schema

        db_url = databases.enter_context(fresh_schema(PG_BASE, prefix="bench"))
    else:
        db_url = f"sqlite:///{tempfile.mkdtemp()}/bench.db"
    store = Store.open(db_url, auto_upgrade=True)
    spec = SourceSpec(name="arxiv-cs", kind="arxiv-rss", url=url, allow_private=True)

    async def once() -> dict[str, float]:
        fetcher = Fetcher(FetchPolicy(allow_private=True, host_intervals=()))
        timed = TimedStore(store)
        try:
            t, cpu = time.perf_counter(), time.process_time()
            [outcome] = await ingest_sources(timed, [spec], fetcher, now=NOW)  # type: ignore[arg-type]
            elapsed, cpu = time.perf_counter() - t, time.process_time() - cpu
        finally:
            await fetcher.aclose()
        assert outcome.ok, outcome.error
        return {"seconds": elapsed, "cpu": cpu, "store": sum(timed.seconds.values())}

    try:
        first = asyncio.run(once())
        if scenario == "refetch":
            second = asyncio.run(once())
            return {**second, "items": items, "peak_mb": rss_mb() - base}
        assert store.count_papers() == items
        return {**first, "items": items, "peak_mb": rss_mb() - base}
    finally:
        store.close()
        server.shutdown()
        databases.close()


def hostile(progress: Progress) -> list[tuple[str, str, float, float, str]]:
    """(document, parser, seconds, peak RSS MB, outcome) in fresh processes."""
    rows = []
    progress.start("hostile", "hostile documents", 6)
    for doc in ("billion-laughs", "quadratic-200kb", "external-entity"):  # 202 KB bomb
        for parser in ("feedparser", "parse_listing"):
            out = subprocess.run(
                [sys.executable, __file__, "--hostile-child", doc, parser],
                capture_output=True,
                text=True,
                timeout=600,
                check=True,
            )
            data = json.loads(out.stdout)
            rows.append((doc, parser, data["seconds"], data["peak_mb"], data["outcome"]))
            progress.advance("hostile")
    progress.finish("hostile")
    return rows


def hostile_child(doc: str, parser: str) -> dict[str, object]:
    import io

    import feedparser

    from pipeline.errors import SourceError
    from pipeline.sources import parse_listing

    head = '<?xml version="1.0"?>'
    tail = '<rss version="2.0"><channel><title>x</title><item><title>{t}</title>'
    tail += "<link>http://a.example/</link></item></channel></rss>"
    if doc == "billion-laughs":
        ents = '<!ENTITY l0 "lol">' + "".join(
            f'<!ENTITY l{i} "{f"&l{i - 1};" * 10}">' for i in range(1, 10)
        )
        text = f"{head}<!DOCTYPE rss [{ents}]>" + tail.format(t="&l9;")
    elif doc == "quadratic-200kb":
        text = f'{head}<!DOCTYPE rss [<!ENTITY a "{"a" * 100_000}">]>' + tail.format(
            t="&a;" * 34_000
        )
    else:
        text = f'{head}<!DOCTYPE rss [<!ENTITY x SYSTEM "file:///etc/passwd">]>' + tail.format(
            t="&x;"
        )
    body = text.encode()
    base = rss_mb()
    t = time.perf_counter()
    if parser == "feedparser":
        parsed = feedparser.parse(io.BytesIO(body))
        title = parsed.entries[0].get("title", "") if parsed.entries else ""
        outcome = f"bozo={int(bool(parsed.bozo))}, title {len(title)} chars"
    else:
        try:
            parse_listing("feed", body, source="evil", now=NOW)
            outcome = "parsed"
        except SourceError:
            outcome = "refused"
    return {"seconds": time.perf_counter() - t, "peak_mb": rss_mb() - base, "outcome": outcome}


# -- driver ----------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--items", type=int, default=5000)
    ap.add_argument("--child")
    ap.add_argument("--hostile-child", nargs=2)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.items)))
        return
    if args.hostile_child:
        print(json.dumps(hostile_child(*args.hostile_child)))
        return
    size = len(listing(args.items))
    print(f"listing: {args.items} items, {size / 1e6:.1f} MB; {args.runs} runs per scenario")
    print(f"load average before: {os.getloadavg()[0]:.1f} (2 cores shared with other work)")
    print(
        "| scenario | wall s | items/s (wall) | CPU s | items/s (CPU) | in store s | peak RSS MB |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    # Progress on stderr (bars on a terminal, plain lines otherwise); the table rows are
    # printed once it is closed: stdout carries only them.
    progress = progress_for(sys.stderr)
    table: list[str] = []
    for scenario in SCENARIOS:
        runs = []
        progress.start(scenario, scenario, args.runs)
        for _ in range(args.runs):
            out = subprocess.run(
                [sys.executable, __file__, "--child", scenario, "--items", str(args.items)],
                capture_output=True,
                text=True,
                timeout=900,
            )
            if out.returncode != 0:
                table.append(f"| {scenario} | failed: {out.stderr.strip().splitlines()[-1]} | | |")
                break
            runs.append(json.loads(out.stdout))
            progress.advance(scenario)
        if not runs:
            progress.finish(scenario, "failed")
            continue
        seconds = statistics.median(r["seconds"] for r in runs)
        cpu = statistics.median(r["cpu"] for r in runs)
        peak = statistics.median(r["peak_mb"] for r in runs)
        store = statistics.median(r.get("store", 0.0) for r in runs)
        failed = "" if len(runs) == args.runs else f", run {len(runs) + 1} failed"
        progress.finish(scenario, f"median {seconds:.3f} s{failed}")
        store_text = f"{store:.3f}" if scenario in ("sqlite", "postgres", "refetch") else "-"
        if scenario == "refetch":
            table.append(
                f"| refetch (304) | {seconds * 1000:.1f} ms | - | {cpu * 1000:.1f} ms | - "
                f"| {store * 1000:.1f} ms | {peak:.0f} |"
            )
        else:
            table.append(
                f"| {scenario} | {seconds:.3f} | {args.items / seconds:,.0f} | {cpu:.3f} "
                f"| {args.items / cpu:,.0f} | {store_text} | {peak:.0f} |"
            )
    hostile_rows = hostile(progress)
    progress.close()
    print("\n".join(table))
    print()
    print("| hostile document | parser | ms | peak RSS MB above baseline | outcome |")
    print("|---|---|---:|---:|---|")
    for doc, parser, seconds, peak, outcome in hostile_rows:
        print(f"| {doc} | {parser} | {seconds * 1000:.2f} | {peak:.0f} | {outcome} |")


if __name__ == "__main__":
    main()
