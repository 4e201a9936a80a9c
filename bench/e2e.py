"""One benchmark of the whole cycle: N readers, one day of listings, ingest -> plan -> deliver.

Usage (from the repository root)::

    .venv/bin/python bench/e2e.py                                  # 1,000 readers x 500 papers
    .venv/bin/python bench/e2e.py --readers 10000 --papers 500 --json
    .venv/bin/python bench/e2e.py --readers 1000 --db postgresql --sink aiosmtpd

What one run does (bench/E2E.md has the method and the recorded runs):

1. Set-up, not timed: installs Postfix (for ``smtp-sink``) with apt-get when missing;
   builds one day of listings from real arXiv titles and abstracts (the eval capture in
   bench/data, else config/samples): an arXiv RSS 2.0 feed of M items
   (``arxiv:announce_type`` new / cross / replace) and a Hugging Face Daily Papers JSON,
   served by a loopback HTTP server; N readers with a mix of profiles and time zones
   (a JSON Lines file for ``paperpost subscribers import``); a fresh database holding
   the earlier papers (8-59 days old: the corpus the text model is fitted on, and the
   papers readers liked).
2. Ours: a fresh interpreter (``--child``) imports Paperpost, loads the config, imports
   the readers (``App.import_subscribers``) and runs ``App.run_once`` (sync, ingest,
   plan, deliver) against the sink, with a clock at which every reader's period is due.
   Phases are timed by wrapping the App's use cases and a few functions inside them
   (``Matcher.fit``, ``Matcher.match_compact``, ``Composer.load`` / ``.compose``): wall
   and CPU seconds per call, no profiler. A hook that no longer fires (the code moved)
   leaves its time in the enclosing phase; the report then lacks that row.
3. The sink alone: a plain aiosmtplib client sends the run's own messages with 4
   connections to a fresh sink of the same kind.
4. The baseline: ``bench/plain_stack.py`` (a plain stack, no Paperpost) on the same
   readers, listings and sink kind, in ``--baseline-procs`` processes.
5. Start-up commands: ``python -X importtime -c "import pipeline.cli"``, ``paperpost
   --help`` and ``paperpost status`` (on the run's database), medians of 3.

Prints a markdown report, appends it to bench/E2E.md (``--no-record``: don't), and with
``--json`` one JSON object as the last line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import pickle
import random
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar
from xml.sax.saxutils import escape

from pipeline.progress import Progress

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.pgschema (a fresh PostgreSQL schema, via send_daemon)
BENCH = ROOT / "bench"
EVAL = ROOT / "bench" / "data"
SAMPLES = ROOT / "config" / "samples"
RECORD = BENCH / "E2E.md"
PG_BASE = os.environ.get("PAPERPOST_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
SECRET_ENV = "PAPERPOST_BENCH_SECRET"
SECRET = "bench-secret-0123456789abcdef"
# The clock of the run: a Tuesday noon UTC. Every reader is new, so each one's latest
# period (daily, weekdays or weekly, in any zone) is due and has no outbox row yet.
WHEN = datetime(2025, 11, 25, 12, 0, tzinfo=UTC)
LISTED = datetime(2025, 11, 25, 5, 0, tzinfo=UTC)  # arXiv announces at midnight US Eastern
LETTERS_KEPT = 200  # of our messages, re-sent by the sink-alone client

ZONES = [
    "UTC",
    "Europe/London",
    "Europe/Paris",
    "Europe/Berlin",
    "Europe/Helsinki",
    "Europe/Moscow",
    "Africa/Lagos",
    "Africa/Johannesburg",
    "Asia/Dubai",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "Asia/Shanghai",
    "Asia/Tokyo",
    "Asia/Seoul",
    "Australia/Adelaide",
    "Australia/Sydney",
    "Pacific/Auckland",
    "America/Sao_Paulo",
    "America/New_York",
    "America/Chicago",
    "America/Denver",
    "America/Los_Angeles",
    "America/Anchorage",
    "Pacific/Honolulu",
]
FIRST = "Wei Yann Ada Rafael Maria Li Chen Anna Lukas Sofia Omar Priya Kenji Elena Jan Zoë "
FIRST += "Ahmed Fatima João Ingrid Mateo Aiko Noah Olga Ravi Chloé Diego Hana Tomás Amara"
LAST = "Zhang LeCun Lovelace Rafailov García Wang Müller Rossi Kim Nguyen Smith Okafor "
LAST += "Novak Kowalski Ivanova Tanaka Dubois Silva Haddad Larsen Mehta Costa Schmidt "
LAST += "O'Brien Petrov Yamamoto Andersen Moreau Fischer Sato Hernández Cohen Singh Park"
_STOP_WORDS = (
    "about above after again against among another based between both cannot could "
    "current different during each either every first further given however including "
    "large learning model models method methods paper propose proposed results show "
    "shows their there these those through towards under using various which while "
    "within without would approach approaches framework performance state-of-the-art "
    "existing novel present provide study work data task tasks address achieve across "
    "demonstrate significant significantly extensive experiments"
)
STOP = frozenset(_STOP_WORDS.split())


# == set-up (this process; not timed) ==========================================================
def real_rows() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(recent rows newest first, older rows): real arXiv titles, abstracts, categories.

    The labelled capture in bench/data when present, else the sample listings of
    config/samples (titles and abstracts only; categories assigned round-robin)."""
    dev, old = EVAL / "arxiv_cs_dev_2025.jsonl", EVAL / "arxiv_oai_cs_set_1000_2007.jsonl"
    if dev.is_file():
        recent = [json.loads(line) for line in dev.open(encoding="utf-8")]
        recent.sort(key=lambda r: (r.get("listing_date", ""), r["id"]), reverse=True)
        older = [json.loads(line) for line in old.open(encoding="utf-8")] if old.is_file() else []
        return recent, older
    import xml.etree.ElementTree as ET

    cats = ["cs.LG", "cs.CL", "cs.CV", "cs.AI", "stat.ML", "cs.RO"]
    rows = []
    for path in sorted(SAMPLES.glob("daily-papers-*.rss")):
        for item in ET.parse(path).getroot().iter("item"):
            n = len(rows)
            rows.append(
                {
                    "id": f"2401.{n:05d}",
                    "title": item.findtext("title") or "",
                    "abstract": item.findtext("description") or "",
                    "categories": [cats[n % 6], cats[(n + 2) % 6]],
                }
            )
    return rows, []


def variant(row: dict[str, Any], n: int, rng: random.Random) -> dict[str, Any]:
    """A synthetic variant of a real entry: qualified title, sentences rotated."""
    sentences = re.split(r"(?<=\.) ", row["abstract"])
    k = rng.randrange(len(sentences)) if sentences else 0
    lead = ["Revisiting", "Towards", "On", "Scaling", "Rethinking", "Beyond"][n % 6]
    return {
        **row,
        "title": f"{lead} {row['title']}",
        "abstract": " ".join(sentences[k:] + sentences[:k]),
    }


class Day:
    """One day of listings, the earlier papers, and the readers."""

    def __init__(self, readers: int, papers: int, seed: int = 7) -> None:
        rng = random.Random(seed)
        recent, older = real_rows()
        pool = [f"{f} {s}" for f in FIRST.split() for s in LAST.split()]
        rng.shuffle(pool)
        self.author_pool = pool
        # today's items: the newest real entries (variants beyond them), new arXiv ids
        take = min(papers, max(len(recent) - 200, len(recent) // 2))
        today = recent[:take]
        today += [variant(recent[i % take], i, rng) for i in range(papers - take)]
        self.history = [dict(r) for r in recent[take:] + older]
        for i, row in enumerate(self.history):
            row["authors"] = self._authors(rng)
            row["days_ago"] = 8 + i % 52  # first seen 8-59 days before the run
        kinds = ["new"] * 7 + ["cross"] * 2 + ["replace"]
        self.items: list[dict[str, Any]] = []
        for i, row in enumerate(today):
            kind = kinds[i % len(kinds)]
            if kind == "replace" and self.history:  # a new version of an earlier paper
                base = self.history[(i * 7) % len(self.history)]
                item = {**base, "kind": rng.choice(["replace", "replace-cross"]), "version": 2}
            else:
                item = {**row, "id": f"2511.{20000 + i:05d}", "kind": kind, "version": 1}
                item["authors"] = self._authors(rng)
            self.items.append(item)
        new_items = [i for i in self.items if i["version"] == 1]
        hf = [dict(i) for i in rng.sample(new_items, min(len(new_items), max(10, papers // 12)))]
        hf += [  # papers on Hugging Face that are not in this arXiv listing
            {**variant(rng.choice(recent), j, rng), "id": f"2511.{60000 + j:05d}"}
            for j in range(max(2, len(hf) // 4))
        ]
        for entry in hf:
            entry.setdefault("authors", self._authors(rng))
            entry["upvotes"] = int(rng.paretovariate(1.2) * 3)
        self.hf = hf
        self.readers = self._readers(readers, rng)

    def _authors(self, rng: random.Random) -> list[str]:
        n = min(12, 1 + int(rng.expovariate(0.35)))
        # popular authors appear more often (a Pareto draw over the pool)
        return list(dict.fromkeys(self._author(rng) for _ in range(n)))

    def _author(self, rng: random.Random) -> str:
        """Some authors publish more than others: skewed towards the front of the pool."""
        return self.author_pool[int(len(self.author_pool) * rng.random() ** 1.5)]

    # -- the listings --------------------------------------------------------------------------
    def rss(self) -> bytes:
        date = format_datetime(LISTED)
        out = [
            "<?xml version='1.0' encoding='UTF-8'?>\n"
            '<rss xmlns:arxiv="http://arxiv.org/schemas/atom" '
            'xmlns:dc="http://purl.org/dc/elements/1.1/" '
            'xmlns:atom="http://www.w3.org/2005/Atom" '
            'xmlns:content="http://purl.org/rss/1.0/modules/content/" version="2.0">\n'
            "<channel>\n<title>cs updates on arXiv.org</title>\n"
            "<link>http://rss.arxiv.org/rss/cs</link>\n"
            "<description>cs updates on the arXiv.org e-print archive.</description>\n"
            f"<language>en-us</language>\n<pubDate>{date}</pubDate>\n"
        ]
        for item in self.items:
            ident, kind, version = item["id"], item["kind"], item["version"]
            out.append(
                "<item>\n"
                f"<title>{escape(item['title'])}</title>\n"
                f"<link>https://arxiv.org/abs/{ident}</link>\n"
                f"<description>arXiv:{ident}v{version} Announce Type: {kind} \n"
                f"Abstract: {escape(item['abstract'])}</description>\n"
                f'<guid isPermaLink="false">oai:arXiv.org:{ident}v{version}</guid>\n'
                + "".join(f"<category>{c}</category>\n" for c in item["categories"])
                + f"<pubDate>{date}</pubDate>\n"
                f"<arxiv:announce_type>{kind}</arxiv:announce_type>\n"
                "<dc:rights>http://creativecommons.org/licenses/by/4.0/</dc:rights>\n"
                f"<dc:creator>{escape(', '.join(item['authors']))}</dc:creator>\n"
                "</item>\n"
            )
        out.append("</channel>\n</rss>\n")
        return "".join(out).encode()

    def hf_json(self) -> bytes:
        """The Hugging Face ``/api/daily_papers`` shape (see config/samples)."""
        day = LISTED.strftime("%Y-%m-%dT00:00:00.000Z")
        entries = []
        for n, e in enumerate(self.hf):
            paper = {
                "id": e["id"],
                "authors": [
                    {"_id": f"{n:08x}{k:016x}", "name": a, "hidden": False}
                    for k, a in enumerate(e["authors"])
                ],
                "publishedAt": day,
                "submittedOnDailyAt": day,
                "title": e["title"],
                "summary": e["abstract"],
                "upvotes": e["upvotes"],
                "discussionId": f"{n:024x}",
            }
            if n % 3 == 0:
                paper["githubRepo"] = f"https://github.com/lab{n}/code"
                paper["githubStars"] = n * 7
            entries.append(
                {
                    "paper": paper,
                    "publishedAt": day,
                    "title": e["title"],
                    "summary": e["abstract"],
                    "thumbnail": f"https://cdn-thumbnails.huggingface.co/social-thumbnails/papers/{e['id']}.png",
                    "numComments": n % 4,
                    "isAuthorParticipating": False,
                }
            )
        return json.dumps(entries).encode()

    # -- the readers ---------------------------------------------------------------------------
    def _readers(self, n: int, rng: random.Random) -> list[dict[str, Any]]:
        """A mix of profiles (bench/E2E.md lists the proportions); every query distinct."""
        texts = [f"{i['title']} {i['abstract']}" for i in self.items + self.history]
        df: Counter[str] = Counter()
        for t in texts:
            df.update({w for w in re.findall(r"[a-z]{5,}", t.lower()) if w not in STOP})
        # keywords that are neither rare nor everywhere: 0.2 %-4 % of the papers
        vocab = sorted(w for w, c in df.items() if 0.002 * len(texts) <= c <= 0.04 * len(texts))
        phrases = [
            " ".join(p)
            for t in (i["title"] for i in self.items)
            for p in zip(t.lower().split(), t.lower().split()[1:], strict=False)
            if all(w.isalpha() and len(w) > 3 and w not in STOP for w in p)
        ] or vocab
        cats = [c for i in self.items for c in i["categories"][:2]]
        liked_pool = [h["id"] for h in self.history] or [i["id"] for i in self.items]
        about_pool = [
            re.split(r"(?<=\.) ", h["abstract"])[0][:200] for h in (self.history or self.items)
        ]
        forms = [
            "{a} OR {b} OR {c}",
            "ti:{a} OR abs:({b} AND {c})",
            'abs:"{p}" OR ti:{c}',
            "({a} OR {b}) ANDNOT ti:{c}",
            "{a5}* AND ({b} OR {c})",
            "abs:{a} AND abs:{b} OR ti:{c}",
        ]
        seen: set[str] = set()
        kinds = ["query"] * 35 + ["categories"] * 15 + ["authors"] * 10 + ["about"] * 12
        kinds += ["liked"] * 13 + ["trending"] * 10 + ["mixed"] * 5
        frequencies = ["daily"] * 17 + ["weekdays"] * 2 + ["weekly:mon"]
        out = []
        for r in range(n):
            kind = kinds[r % len(kinds)] if n >= len(kinds) else rng.choice(kinds)
            interests: dict[str, Any] = {}
            if kind in ("query", "mixed"):
                while True:
                    a, b, c = rng.sample(vocab, 3)
                    query = rng.choice(forms).format(a=a, b=b, c=c, a5=a[:5], p=rng.choice(phrases))
                    if query not in seen:
                        seen.add(query)
                        break
                interests["query"] = query
            if kind == "categories" or (kind in ("query", "authors") and rng.random() < 0.4):
                picked = rng.sample(cats, rng.randint(1, 3))
                interests["categories"] = sorted(
                    {"cs.*" if rng.random() < 0.02 else c for c in picked}
                )
            if kind in ("authors", "mixed"):
                interests["authors"] = [self._author(rng) for _ in range(rng.randint(1, 3))]
            if kind in ("about", "mixed") or (kind == "liked" and rng.random() < 0.3):
                interests["about"] = rng.choice(about_pool)
            if kind in ("liked", "mixed"):
                interests["like"] = rng.sample(liked_pool, rng.randint(1, 5))
            if kind != "trending" and rng.random() < 0.05:
                interests["exclude"] = rng.choice(["ti:survey", "abs:benchmark", "cat:cs.RO"])
            record = {
                "email": f"reader{r:06d}@lab.example",
                "name": f"{rng.choice(FIRST.split())} {rng.choice(LAST.split())}",
                "timezone": rng.choice(ZONES),
                "frequency": rng.choice(frequencies),
                "send_at": f"{rng.randint(5, 10):02d}:{rng.choice([0, 15, 30, 45]):02d}",
                "trending": rng.choice([3, 5])
                if kind == "trending"
                else (3 if rng.random() < 0.15 else 0),
                "interests": interests,
            }
            out.append(record)
        return out

    def write_readers(self, path: Path) -> None:
        path.write_text("".join(json.dumps(r) + "\n" for r in self.readers), encoding="utf-8")

    def write_history(self, path: Path) -> None:
        """The earlier papers as JSON Lines (the baseline reads liked papers from it)."""
        rows = [
            {"id": h["id"], "title": h["title"], "abstract": h["abstract"]} for h in self.history
        ]
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def seed_history(url: str, day: Day) -> None:
    """Migrate the fresh database and store the earlier papers, each on its own day."""
    from pipeline.domain import Paper
    from pipeline.store import Store

    store = Store.open(url, auto_upgrade=True)
    try:
        by_day: dict[int, list[Paper]] = {}
        for h in day.history:
            seen = WHEN - timedelta(days=h["days_ago"])
            by_day.setdefault(h["days_ago"], []).append(
                Paper(
                    id=h["id"],
                    title=h["title"],
                    abstract=h["abstract"],
                    authors=tuple(h["authors"]),
                    categories=tuple(h["categories"]),
                    url=f"https://arxiv.org/abs/{h['id']}",
                    pdf_url=f"https://arxiv.org/pdf/{h['id']}",
                    version=1,
                    published=seen,
                    announced=seen,
                    announce_type="new",
                )
            )
        for days_ago, papers in sorted(by_day.items(), reverse=True):
            store.save_papers(papers, now=WHEN - timedelta(days=days_ago))
    finally:
        store.close()


def database(kind: str, directory: Path) -> contextlib.AbstractContextManager[str]:
    """The URL of an empty database: a SQLite file, or a fresh PostgreSQL schema (dropped)."""
    from send_daemon import fresh_database  # the same helper bench/send.py uses

    return fresh_database("sqlite" if kind == "sqlite" else PG_BASE, directory)


class _Listing(BaseHTTPRequestHandler):
    bodies: ClassVar[dict[str, tuple[bytes, str]]] = {}
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body, kind = self.bodies.get(self.path.split("?")[0], (b"not found", "text/plain"))
        self.send_response(200 if kind != "text/plain" else 404)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def listing_server(day: Day) -> Iterator[tuple[str, str]]:
    """(arXiv RSS URL, HF JSON URL) on a loopback HTTP server in a thread."""
    _Listing.bodies = {
        "/rss/cs": (day.rss(), "application/rss+xml; charset=utf-8"),
        "/api/daily_papers": (day.hf_json(), "application/json"),
    }
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Listing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield f"{base}/rss/cs", f"{base}/api/daily_papers"
    finally:
        server.shutdown()


def ensure_smtp_sink() -> None:
    """Install Debian's postfix (which ships smtp-sink) when it is missing."""
    if shutil.which("smtp-sink"):
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        sys.exit("smtp-sink not found (Debian package postfix) and apt-get is not usable here")
    print("installing postfix for smtp-sink (apt-get) ...", file=sys.stderr)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(
        ["debconf-set-selections"],
        input=b"postfix postfix/main_mailer_type select No configuration\n",
        check=False,
    )
    subprocess.run(["apt-get", "update", "-qq"], env=env, check=True)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "postfix"],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    if not shutil.which("smtp-sink"):
        sys.exit("postfix installed but smtp-sink is still not on PATH")


CONFIG = """
[database]
url = "{url}"

[mail]
from = "Paperpost <digest@lab.example>"
transport = "smtp"
list_name = "Paperpost"
unsubscribe_mailto = "unsubscribe@lab.example"
concurrency = 4

[mail.smtp]
host = "127.0.0.1"
port = {port}
security = "none"
pool_size = 4
max_per_connection = 10000

[web]
base_url = "https://digest.lab.example"
secret_env = "{secret_env}"

[render]
preview_dir = "{directory}/previews"

[[sources]]
name = "arxiv-cs"
kind = "arxiv-rss"
url = "{rss}"
allow_private = true

[[sources]]
name = "hf-daily"
kind = "hf-daily"
url = "{hf}"
allow_private = true
"""


# == ours: the cycle in a fresh interpreter (--child) ==========================================
class Phases:
    """Wall and CPU seconds per phase, added up over calls."""

    def __init__(self) -> None:
        self.seconds: dict[str, list[float]] = {}
        self.calls: Counter[str] = Counter()

    def add(self, name: str, wall: float, cpu: float) -> None:
        acc = self.seconds.setdefault(name, [0.0, 0.0])
        acc[0] += wall
        acc[1] += cpu
        self.calls[name] += 1

    def wrap(
        self, name: str, fn: Callable[..., Any], cpu: Callable[[], float]
    ) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            w, c = time.perf_counter(), cpu()
            try:
                return fn(*args, **kwargs)
            finally:
                self.add(name, time.perf_counter() - w, cpu() - c)

        return timed

    def wrap_async(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        async def timed(*args: Any, **kwargs: Any) -> Any:
            w, c = time.perf_counter(), time.process_time()
            try:
                return await fn(*args, **kwargs)
            finally:
                self.add(name, time.perf_counter() - w, time.process_time() - c)

        return timed

    def get(self, name: str) -> tuple[float, float]:
        wall, cpu = self.seconds.get(name, (0.0, 0.0))
        return wall, cpu


# What the cycle imports (start-up), and the calls timed inside the App's phases:
# (module, class or "", function, phase).
CYCLE_MODULES = (
    "pipeline.cycle.plan",
    "pipeline.cycle.deliver",
    "pipeline.cycle.compose",
    "pipeline.match",
    "pipeline.match.result",
    "pipeline.ingest.run",
    "pipeline.ingest.fetch",
    "pipeline.mail",
    "pipeline.render",
)
HOOKS = (
    ("pipeline.cycle.plan", "", "due_ids", "due"),
    ("pipeline.cycle.plan", "", "due_among", "due"),
    ("pipeline.match", "Matcher", "fit", "fit"),
    ("pipeline.match", "Matcher", "match_compact", "match"),
    ("pipeline.match.result", "MatchResult", "items_range", "items"),
    ("pipeline.cycle.compose", "Composer", "load", "compose"),
    ("pipeline.cycle.compose", "Composer", "compose", "compose"),
)
KEPT: list[bytes] = []  # some of our messages, for the sink-alone client
SIZES: list[int] = []


def _keeping(compose: Callable[..., Any]) -> Callable[..., Any]:
    def compose_and_keep(self: Any, *a: Any, **k: Any) -> Any:
        letter = compose(self, *a, **k)
        if letter.data is not None:
            SIZES.append(len(letter.data))
            if len(KEPT) < LETTERS_KEPT:
                KEPT.append(letter.data)
        return letter

    return compose_and_keep


def _resident_mb() -> float:
    """This process's resident set now (Linux), in MB."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class _Sample(Progress):
    """Passes every step on, and sets ``stop`` once ``count`` digests were delivered: the
    daemon's own drain (claim nothing more, finish what is in flight) ends the send."""

    def __init__(self, inner: Progress, count: int) -> None:
        self.inner, self.count, self.stop = inner, count, asyncio.Event()

    def start(self, key: str, label: str, total: int | None = None) -> None:
        self.inner.start(key, label, total)

    def advance(self, key: str, n: int = 1) -> None:
        self.inner.advance(key, n)
        if key == "deliver":
            self.count -= n
            if self.count <= 0:
                self.stop.set()

    def finish(self, key: str, note: str = "") -> None:
        self.inner.finish(key, note)

    def close(self) -> None:
        self.inner.close()


def child(args: argparse.Namespace) -> None:
    """The cycle, timed, in this fresh interpreter; writes a JSON result to ``args.out``.

    Start-up imports everything the cycle runs (the App imports its stages lazily, on
    first use; importing them here keeps that cost in "start-up", whatever the App defers).
    """
    import importlib

    from pipeline.app import App
    from pipeline.config import load_config
    from pipeline.logs import configure_logging
    from pipeline.progress import progress_for

    modules = {}
    for name in CYCLE_MODULES:
        with contextlib.suppress(ImportError):
            modules[name] = importlib.import_module(name)
    startup = (time.time() - args.t0, time.process_time())

    configure_logging()  # what the CLI does without -v (INFO: a line per source, plan, batch)
    ph = Phases()
    # Hooks inside the phases (profiler-free): the enclosing phase's time minus theirs.
    # Each is optional: code that moved leaves its time in the enclosing phase.
    missing = []
    for module, owner, attr, phase in HOOKS:
        target = getattr(modules.get(module), owner, None) if owner else modules.get(module)
        if target is None or not callable(getattr(target, attr, None)):
            missing.append(f"{module}:{owner + '.' if owner else ''}{attr}")
            continue
        # composing runs on the loop thread and its row reads in a thread: thread CPU
        cpu = time.thread_time if phase == "compose" else time.process_time
        wrapped = ph.wrap(phase, getattr(target, attr), cpu)
        if (owner, attr) == ("Composer", "compose"):
            wrapped = _keeping(wrapped)
        setattr(target, attr, wrapped)

    w, c = time.perf_counter(), time.process_time()
    config = load_config(args.config, env={**os.environ, SECRET_ENV: SECRET})
    app = App(config, clock=lambda: WHEN, holder="bench-e2e")
    imported = app.import_subscribers(Path(args.readers_file))
    ph.add("config/sync", time.perf_counter() - w, time.process_time() - c)
    # `paperpost subscribers import` is its own process in production: its peak apart
    import_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    import_resident = _resident_mb()
    app.sync = ph.wrap("config/sync", app.sync, time.process_time)  # type: ignore[method-assign]
    app.ingest = ph.wrap_async("ingest", app.ingest)  # type: ignore[method-assign]
    app.plan = ph.wrap("plan", app.plan, time.process_time)  # type: ignore[method-assign]
    app.deliver = ph.wrap_async("deliver", app.deliver)  # type: ignore[method-assign]

    # Progress on stderr (bars on a terminal, a dozen plain lines per step otherwise):
    # stdout carries the report.
    progress = progress_for(sys.stderr)
    if args.send_sample:  # plan everyone, send the first N digests, then stop claiming
        progress = _Sample(progress, int(args.send_sample))
        dispatch = app.dispatch

        async def sampled(**kwargs: Any) -> Any:
            return await dispatch(**kwargs, stopping=progress.stop)

        app.dispatch = sampled  # type: ignore[method-assign]
    report = asyncio.run(app.run_once(progress=progress))
    total_wall, total_cpu = time.time() - args.t0, time.process_time()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    workers_cpu = children.ru_utime + children.ru_stime

    phases: dict[str, dict[str, float]] = {"start-up": {"wall_s": startup[0], "cpu_s": startup[1]}}

    def put(name: str, wall: float, cpu: float) -> None:
        phases[name] = {"wall_s": round(wall, 4), "cpu_s": round(cpu, 4)}

    put("config/sync", *ph.get("config/sync"))
    put("ingest", *ph.get("ingest"))
    plan_wall, plan_cpu = ph.get("plan")
    inner = [n for n in ("due", "fit", "match", "items") if ph.calls[n]]
    for name in inner:
        put(
            {"due": "plan: due readers", "items": "plan: items + reasons"}.get(name, name),
            *ph.get(name),
        )
    rest = "plan writes" if {"fit", "match"} <= set(inner) else "plan (fit+match+writes)"
    put(
        rest,
        plan_wall - sum(ph.get(n)[0] for n in inner),
        plan_cpu - sum(ph.get(n)[1] for n in inner),
    )
    deliver_wall, deliver_cpu = ph.get("deliver")
    if ph.calls["compose"]:
        put("compose", *ph.get("compose"))
        put("send", deliver_wall - ph.get("compose")[0], deliver_cpu - ph.get("compose")[1])
    else:  # composed in worker processes: one phase, with the workers' CPU
        put("deliver (compose in workers + send)", deliver_wall, deliver_cpu + workers_cpu)
        total_cpu += workers_cpu
    counted_wall = sum(p["wall_s"] for p in phases.values())
    counted_cpu = sum(p["cpu_s"] for p in phases.values())
    put(
        "other (run_once bookkeeping, event loop)",
        total_wall - counted_wall,
        total_cpu - counted_cpu,
    )

    if not KEPT:  # composed in worker processes: compose some of the sent rows here
        from pipeline.cycle.compose import Composer

        composer = Composer(config, app.store)
        sent = app.store.list_deliveries(statuses=["sent"], limit=LETTERS_KEPT)
        for delivery in app.store.load_deliveries([e.id for e in sent]).values():
            letter = composer.compose(delivery, delivery.schedule, now=WHEN)
            KEPT.extend([letter.data] if letter.data else [])
    app.close()
    with open(args.letters, "wb") as fh:
        pickle.dump(KEPT, fh)
    result = {
        "phases": phases,
        "total_wall_s": total_wall,
        "total_cpu_s": total_cpu,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_rss_import_mb": import_rss,
        "resident_after_import_mb": import_resident,
        "imported": imported.added,
        "sources": {
            o.name: {"ok": o.ok, "entries": o.entries, "new": o.new, "error": o.error}
            for o in report.sources
        },
        "due": report.plan.due,
        "planned": report.plan.planned,
        "skipped_empty": report.plan.skipped_empty,
        "items": sum(report.plan.items.values()),
        "sent": report.deliver.sent,
        "failed": report.deliver.failed + report.deliver.ambiguous + report.deliver.deferred,
        "aborted": report.deliver.aborted,
        "message_kb": statistics.mean(SIZES) / 1000 if SIZES else 0.0,
        "hooks_missing": missing,
    }
    Path(args.out).write_text(json.dumps(result))


def run_ours(
    config: Path,
    readers_file: Path,
    directory: Path,
    kind: str,
    profile: str | None,
    gil_only: bool = False,
    send_sample: int = 0,
) -> tuple[dict[str, Any], float]:
    """Run the child; (its result, the sink's CPU seconds)."""
    from send import process_cpu, sink  # bench/send.py's sink (not in the child)

    out, letters = directory / "ours.json", directory / "letters.pickle"
    with sink(kind) as (port, pid):
        body = config.read_text()
        config.write_text(re.sub(r"(?m)^port = \d+$", f"port = {port}", body))
        command = [sys.executable, __file__, "--child", "--config", str(config)]
        command += [
            "--readers-file",
            str(readers_file),
            "--out",
            str(out),
            "--letters",
            str(letters),
        ]
        if send_sample:
            command += ["--send-sample", str(send_sample)]
        if profile:
            spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
            fmt = "speedscope" if profile.endswith(".json") else "raw"
            gil = ["--gil"] if gil_only else []
            command = [spy, "record", "-r", "100", *gil, "-f", fmt, "-o", profile, "--", *command]
        sink_cpu = process_cpu(pid)
        subprocess.run([*command, "--t0", repr(time.time())], check=True)
        if not out.is_file():
            sys.exit("the cycle's process failed (see above)")
        sink_cpu = process_cpu(pid) - sink_cpu
    return json.loads(out.read_text()), sink_cpu


# == the sink alone: a plain aiosmtplib client, 4 connections ===================================
async def _blast(port: int, messages: list[bytes], count: int, connections: int) -> int:
    import aiosmtplib

    numbers = iter(range(count))

    async def one() -> int:
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
        await smtp.connect()
        sent = 0
        for n in numbers:  # one iterator shared by the connections
            await smtp.sendmail(
                "digest@lab.example", [f"reader{n}@lab.example"], messages[n % len(messages)]
            )
            sent += 1
        await smtp.quit()
        return sent

    return sum(await asyncio.gather(*(one() for _ in range(connections))))


def sink_alone(kind: str, messages: list[bytes], count: int) -> dict[str, float]:
    from send import process_cpu, sink  # bench/send.py's sink (not in the child)

    with sink(kind) as (port, pid):
        cpu, wall = process_cpu(pid), time.perf_counter()
        sent = asyncio.run(_blast(port, messages, count, 4))
        wall, cpu = time.perf_counter() - wall, process_cpu(pid) - cpu
    return {"sent": sent, "per_s": sent / wall, "sink_cpu_ms": cpu / sent * 1000}


# == the baseline ================================================================================
def run_baseline(
    kind: str, readers_file: Path, history_file: Path, urls: tuple[str, str], procs: int
) -> dict[str, Any]:
    from send import process_cpu, sink  # bench/send.py's sink (not in the child)

    with sink(kind) as (port, pid):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu, wall = process_cpu(pid), time.perf_counter()
        out = subprocess.run(
            [
                sys.executable,
                str(BENCH / "plain_stack.py"),
                str(readers_file),
                *urls,
                str(port),
                "--history",
                str(history_file),
                "--procs",
                str(procs),
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        wall, sink_cpu = time.perf_counter() - wall, process_cpu(pid) - cpu
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    result["wall_s"] = wall
    result["cpu_s"] = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    result["sink_cpu_ms"] = sink_cpu / max(result["sent"], 1) * 1000
    return result


# == start-up commands ==========================================================================
def _wall(command: list[str], repeats: int = 3) -> float:
    runs = []
    for _ in range(repeats):
        t = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, cwd=ROOT)
        runs.append(time.perf_counter() - t)
    return statistics.median(runs)


def startup_commands(config: Path) -> dict[str, Any]:
    """Medians of 3: ``-X importtime`` of pipeline.cli, ``paperpost --help``, ``status``."""
    paperpost = str(Path(sys.executable).parent / "paperpost")
    totals, heavy = [], Counter[str]()
    for _ in range(3):
        err = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", "import pipeline.cli"],
            check=True,
            capture_output=True,
            text=True,
            cwd=ROOT,
        ).stderr
        rows = [line.split("|") for line in err.splitlines() if line.startswith("import time:")]
        rows = [r for r in rows if r[1].strip().isdigit()]
        for r in rows:
            name = r[2].strip()
            if name == "pipeline.cli":
                totals.append(int(r[1]) / 1e6)
            # self time added up by top-level package: where the import time goes
            heavy[name.split(".")[0]] += int(r[0].split(":")[1]) // 3
    return {
        "import_pipeline_cli_s": statistics.median(totals),
        "heaviest_imports_ms": {k: round(v / 1000) for k, v in heavy.most_common(8)},
        "python_bare_s": _wall([sys.executable, "-c", "pass"]),
        "paperpost_help_s": _wall([paperpost, "--help"]),
        "paperpost_status_s": _wall([paperpost, "-c", str(config), "status"]),
    }


# == the report ==================================================================================
def git_commit() -> str:
    def git(*a: str) -> str:
        return subprocess.run(["git", *a], capture_output=True, text=True, cwd=ROOT).stdout.strip()

    head = git("rev-parse", "--short", "HEAD")
    return f"{head} dirty" if git("status", "--porcelain", "--untracked-files=no") else head


def changed_code() -> list[str]:
    """The application's files that differ from HEAD (what "dirty" measured)."""
    out = subprocess.run(
        ["git", "status", "--porcelain", "--", "pipeline"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    ).stdout
    return sorted(line[3:].removeprefix("pipeline/") for line in out.splitlines())


def report_markdown(r: dict[str, Any]) -> str:
    lines = [
        f"### {r['date']} · {r['commit']} · {r['readers']:,} readers × {r['papers']:,} papers"
        f" · {r['db']} · {r['sink']}",
        "",
        f"Uncommitted changes in pipeline/: {', '.join(r['changed']) or 'none'}.",
        "",
        f"Load average (1 min) {r['load'][0]:.2f} at the start, {r['load'][1]:.2f} at the end; "
        f"{r['due']:,} readers due, {r['digests']:,} digests sent ({r['skipped_empty']:,} "
        f"skipped: nothing matched), {r['items']:,} items; {r['window_papers']:,} papers in "
        f"the window; messages {r['message_kb']:.1f} KB "
        f"(baseline {r['baseline_message_kb']:.1f} KB).",
        "",
        "| phase | wall s | CPU s | share of wall |",
        "|---|---:|---:|---:|",
    ]
    for name, p in r["phases"].items():
        share = p["wall_s"] / r["total_wall_s"] * 100
        lines.append(f"| {name} | {p['wall_s']:.3f} | {p['cpu_s']:.3f} | {share:.1f} % |")
    lines.append(
        f"| **total** | **{r['total_wall_s']:.3f}** | **{r['total_cpu_s']:.3f}** | 100 % |"
    )
    if r["hooks_missing"]:
        lines.append(f"Not found (their time is in the enclosing phase): {r['hooks_missing']}.")
    s, b = r["startup"], r["baseline"]
    lines += [
        "",
        "| ours digests/s (whole cycle) | CPU ms per digest | peak RSS | baseline digests/s "
        "| baseline CPU ms per digest | ratio per core | sink alone /s | sink CPU ms/msg "
        "(ours / alone / baseline) |",
        "|---:|---:|---:|---:|---:|---:|---:|---|",
        f"| {r['digests_per_s']:,.0f} | {r['total_cpu_s'] / max(r['digests'], 1) * 1000:.2f} "
        f"| {r['peak_rss_mb']:,.0f} MB | {r['baseline_digests_per_s']:,.0f} "
        f"({r['baseline_procs']} proc{'s' if r['baseline_procs'] > 1 else ''}, {b['sent']:,} sent) "
        f"| {b['cpu_s'] / max(b['sent'], 1) * 1000:.2f} | {r['ratio']:.2f} "
        f"| {r['sink_alone_per_s']:,.0f} | {r['sink_cpu_ms']:.3f} / "
        f"{r['sink_alone']['sink_cpu_ms']:.3f} / {b['sink_cpu_ms']:.3f} |",
        "",
        "Start-up (medians of 3): `import pipeline.cli` "
        f"{s['import_pipeline_cli_s'] * 1000:.0f} ms "
        f"by `-X importtime` (its own modules' import time by package, ms: "
        + ", ".join(f"{k} {v}" for k, v in s["heaviest_imports_ms"].items())
        + f"); `python -c pass` {s['python_bare_s'] * 1000:.0f} ms, `paperpost --help` "
        f"{s['paperpost_help_s'] * 1000:.0f} ms, `paperpost status` "
        f"{s['paperpost_status_s'] * 1000:.0f} ms (on this run's database).",
        "",
    ]
    return "\n".join(lines)


# == --runner procrastinate: the daemon's tick here, planning and delivery by worker processes ===
WORKER_TABLES = """
[daemon]
runner = "procrastinate"
grace_seconds = 10

[worker]
concurrency = 2
delivery_jobs = {jobs}
sweep_seconds = 30
"""


def _pg_stats(url: str) -> dict[str, float]:
    """The database's own counters for our database: commits and rows updated."""
    import psycopg

    conninfo = "postgresql://" + url.partition("://")[2]
    with psycopg.connect(conninfo) as conn:
        row = conn.execute(
            "SELECT xact_commit, tup_updated FROM pg_stat_database "
            "WHERE datname = current_database()"
        ).fetchone()
    assert row is not None
    return {"commits": float(row[0]), "updated": float(row[1])}


def run_procrastinate(args: argparse.Namespace) -> None:
    """Ingest the day in this process, then time the daemon's dispatch tick (who is due,
    the matcher's input digest, plan_block jobs) and ``--workers`` worker processes
    planning the blocks and delivering them: digests/s, rows claimed/s, the workers',
    sink's and (whole server's) PostgreSQL CPU, the matcher fits the workers logged, and
    the load, appended to bench/E2E.md."""
    from send import process_cpu, sink

    from pipeline.app import App
    from pipeline.config import load_config
    from pipeline.runner.jobs import Dispatcher, PlanDispatch
    from pipeline.runner.schema import apply_schema_async

    if args.db != "postgresql":
        sys.exit("--runner procrastinate needs --db postgresql")
    load0 = os.getloadavg()[0]
    started = datetime.now(UTC)
    day = Day(args.readers, args.papers)
    env = {**os.environ, SECRET_ENV: SECRET}
    with tempfile.TemporaryDirectory(prefix="paperpost-e2e-") as tmp:
        directory = Path(tmp)
        readers_file, history_file = directory / "readers.jsonl", directory / "history.jsonl"
        day.write_readers(readers_file)
        day.write_history(history_file)
        with (
            database("postgresql", directory) as url,
            listing_server(day) as urls,
            sink(args.sink) as (port, sink_pid),
        ):
            seed_history(url, day)
            path = directory / "paperpost.toml"
            path.write_text(
                CONFIG.format(
                    url=url,
                    port=port,
                    secret_env=SECRET_ENV,
                    directory=directory,
                    rss=urls[0],
                    hf=urls[1],
                )
                + WORKER_TABLES.format(jobs=2 * args.workers)
            )
            config = load_config(path, env=env)
            app = App(config, clock=lambda: WHEN, holder="bench-e2e")
            began = time.perf_counter()
            app.import_subscribers(readers_file)
            app.sync()
            asyncio.run(app.ingest())
            asyncio.run(apply_schema_async(config))
            setup_wall = time.perf_counter() - began
            logs = [directory / f"worker-{n}.log" for n in range(args.workers)]
            workers = []
            for log in logs:
                with log.open("ab") as stderr:
                    workers.append(
                        subprocess.Popen(
                            [sys.executable, "-m", "pipeline.cli", "-c", str(path), "worker"],
                            env=env,
                            stderr=stderr,
                        )
                    )
            time.sleep(3)  # imports and connections: not part of the delivery rate
            pg0, sink0 = _pg_stats(url), process_cpu(sink_pid)
            cpu0 = [process_cpu(w.pid) for w in workers]
            t0 = time.perf_counter()

            async def tick() -> PlanDispatch:
                dispatcher = Dispatcher(config)
                await dispatcher.open()
                try:
                    return await dispatcher.defer_plan(app, now=WHEN)
                finally:
                    await dispatcher.close()

            plan = asyncio.run(tick())
            tick_wall = time.perf_counter() - t0
            plan_wall = 0.0
            open_states = ("pending", "deferred", "claimed", "sending")
            while sum((counts := app.outbox_counts()).values()) < plan.due or any(
                counts.get(state, 0) for state in open_states
            ):
                if not plan_wall and sum(counts.values()) >= plan.due:
                    plan_wall = time.perf_counter() - t0
                if any(w.poll() is not None for w in workers):
                    sys.exit(f"a worker exited: {counts}")
                failed = counts.get("failed", 0) or counts.get("ambiguous", 0)
                if failed or "with status: Error" in "".join(log.read_text() for log in logs):
                    for w in workers:
                        w.terminate()
                    sys.exit(f"digests or plan_block jobs failed (see {logs}): {counts}")
                time.sleep(0.1)
            wall = time.perf_counter() - t0
            plan_wall = plan_wall or wall
            fits = [log.read_text(encoding="utf-8").count("matcher fitted") for log in logs]
            workers_cpu = sum(process_cpu(w.pid) - c for w, c in zip(workers, cpu0, strict=True))
            sink_cpu, pg1 = process_cpu(sink_pid) - sink0, _pg_stats(url)
            for w in workers:
                w.terminate()
            codes = [w.wait(timeout=60) for w in workers]
            app.close()
    sent = counts["sent"]
    result = {
        "date": started.strftime("%Y-%m-%d %H:%M UTC"),
        "readers": args.readers,
        "workers": args.workers,
        "due": plan.due,
        "plan_blocks": plan.blocks,
        "setup_wall_s": setup_wall,
        "tick_wall_s": tick_wall,
        "plan_wall_s": plan_wall,
        "fits": fits,
        "sent": sent,
        "deliver_wall_s": wall,
        "digests_per_s": sent / wall,
        "claims_per_s": sent / wall,  # rows claimed (one claim per digest)
        "claim_txns_per_s": sent / config.file.mail.batch_size / wall,
        "pg_commits_per_s": (pg1["commits"] - pg0["commits"]) / wall,
        "pg_rows_updated_per_s": (pg1["updated"] - pg0["updated"]) / wall,
        "workers_cpu_ms_per_digest": workers_cpu / sent * 1000,
        "workers_cpu_cores": workers_cpu / wall,
        "sink_cpu_cores": sink_cpu / wall,
        "load": [load0, os.getloadavg()[0]],
        "exit_codes": codes,
        "sink": args.sink,
    }
    text = (
        f"\n### procrastinate runner, {args.workers} worker(s), {args.readers:,} readers "
        f"({result['date']})\n\n"
        f"- this process: import, sync, ingest in {setup_wall:.1f} s; the daemon's tick "
        f"({plan.due:,} due, {plan.blocks} plan_block jobs) {tick_wall:.2f} s; every row "
        f"planned by the workers {plan_wall:.1f} s after it; matcher fits per worker {fits}\n"
        f"- planned and delivered {sent:,} in {wall:.1f} s: **{sent / wall:.0f} digests/s**; "
        f"rows claimed "
        f"{result['claims_per_s']:.0f}/s in {result['claim_txns_per_s']:.1f} claim "
        f"transactions/s; PostgreSQL {result['pg_commits_per_s']:.0f} commits/s, "
        f"{result['pg_rows_updated_per_s']:.0f} rows updated/s (whole database)\n"
        f"- CPU: workers {result['workers_cpu_cores']:.2f} cores "
        f"({result['workers_cpu_ms_per_digest']:.2f} ms per digest), sink "
        f"{result['sink_cpu_cores']:.2f} cores; load average {load0:.1f} → "
        f"{result['load'][1]:.1f} on {os.cpu_count()} cores (a shared machine)\n"
    )
    print(text)
    if not args.no_record:
        with RECORD.open("a", encoding="utf-8") as fh:
            fh.write(text)
    if args.json:
        print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--readers", type=int, default=1000)
    parser.add_argument("--papers", type=int, default=500)
    parser.add_argument("--sink", choices=["smtp-sink", "aiosmtpd"], default="smtp-sink")
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--baseline-procs", type=int, default=1)
    parser.add_argument(
        "--runner",
        choices=["embedded", "procrastinate"],
        default="embedded",
        help="procrastinate: plan here, deliver with `paperpost worker` processes (PostgreSQL)",
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="with --runner procrastinate: worker processes"
    )
    parser.add_argument(
        "--sink-messages",
        type=int,
        default=0,
        help="sink alone: messages (default: min(5000, max(1000, digests)))",
    )
    parser.add_argument(
        "--profile", help="py-spy the cycle's process into this file (.json: speedscope, else raw)"
    )
    parser.add_argument(
        "--profile-gil",
        action="store_true",
        help="with --profile: sample only the thread holding the GIL (Python CPU work)",
    )
    parser.add_argument(
        "--cycle-only",
        action="store_true",
        help="only ours (e.g. with --profile): no sink-alone, baseline or start-up commands; "
        "prints its phases as JSON, records nothing",
    )
    parser.add_argument(
        "--send-sample",
        type=int,
        default=0,
        help="plan every reader, send only about this many digests (a million readers); "
        "prints ours as JSON like --cycle-only, records nothing",
    )
    parser.add_argument("--no-record", action="store_true", help="don't append to bench/E2E.md")
    parser.add_argument("--json", action="store_true", help="print one JSON object last")
    # the child (the cycle in a fresh interpreter)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    for name in ("--config", "--readers-file", "--out", "--letters"):
        parser.add_argument(name, help=argparse.SUPPRESS)
    parser.add_argument("--t0", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    if args.sink == "smtp-sink":
        ensure_smtp_sink()
    if args.runner == "procrastinate":
        run_procrastinate(args)
        return
    load0 = os.getloadavg()[0]
    commit, changed = git_commit(), changed_code()  # the code the run imports
    started = datetime.now(UTC)
    day = Day(args.readers, args.papers)
    with tempfile.TemporaryDirectory(prefix="paperpost-e2e-") as tmp:
        directory = Path(tmp)
        readers_file, history_file = directory / "readers.jsonl", directory / "history.jsonl"
        day.write_readers(readers_file)
        day.write_history(history_file)
        with database(args.db, directory) as url, listing_server(day) as urls:
            seed_history(url, day)
            config = directory / "paperpost.toml"
            config.write_text(
                CONFIG.format(
                    url=url,
                    port=25,
                    secret_env=SECRET_ENV,
                    directory=directory,
                    rss=urls[0],
                    hf=urls[1],
                )
            )
            ours, sink_cpu = run_ours(
                config,
                readers_file,
                directory,
                args.sink,
                args.profile,
                args.profile_gil,
                args.send_sample,
            )
            assert all(s["ok"] for s in ours["sources"].values()), ours["sources"]
            assert ours["due"] == args.readers, f"{ours['due']} due of {args.readers}"
            assert not ours["failed"], ours
            assert ours["sent"] == ours["planned"] or args.send_sample, ours
            if args.cycle_only or args.send_sample:
                print(json.dumps(ours))
                return
            letters = pickle.loads((directory / "letters.pickle").read_bytes())
            count = args.sink_messages or min(5000, max(1000, ours["sent"]))
            alone = sink_alone(args.sink, letters, count)
            base = run_baseline(args.sink, readers_file, history_file, urls, args.baseline_procs)
            startup = startup_commands(config)
            from pipeline.store import Store

            store = Store.open(url)
            window = len(store.papers_seen_between(WHEN - timedelta(days=7), WHEN))
            store.close()
    digests = ours["sent"]
    ours_rate = digests / ours["total_wall_s"]
    base_rate = base["sent"] / base["wall_s"]
    ours_cores = 1
    base_cores = min(args.baseline_procs, os.cpu_count() or 1)
    result = {
        "readers": args.readers,
        "papers": args.papers,
        "phases": ours["phases"],
        "total_wall_s": ours["total_wall_s"],
        "total_cpu_s": ours["total_cpu_s"],
        "digests_per_s": ours_rate,
        "peak_rss_mb": ours["peak_rss_mb"],
        "baseline_digests_per_s": base_rate,
        "baseline_procs": args.baseline_procs,
        "ratio": (ours_rate / ours_cores) / (base_rate / base_cores),
        "sink_alone_per_s": alone["per_s"],
        # more detail
        "date": started.strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit,
        "changed": changed,
        "db": "SQLite" if args.db == "sqlite" else "PostgreSQL",
        "sink": args.sink,
        "load": [load0, os.getloadavg()[0]],
        "digests": digests,
        "due": ours["due"],
        "skipped_empty": ours["skipped_empty"],
        "items": ours["items"],
        "window_papers": window,
        "message_kb": ours["message_kb"],
        "baseline_message_kb": base["message_kb"],
        "sink_cpu_ms": sink_cpu / max(digests, 1) * 1000,
        "sink_alone": alone,
        "baseline": base,
        "hooks_missing": ours["hooks_missing"],
        "startup": startup,
    }
    text = report_markdown(result)
    print(text)
    if not args.no_record:
        with RECORD.open("a", encoding="utf-8") as fh:
            fh.write("\n" + text)
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
