"""The soak: the real daemon (and workers) over simulated days, under faults, with invariants.

Runs ``paperpost daemon`` (and, for PostgreSQL, ``[daemon] runner = "procrastinate"`` with
two ``paperpost worker`` processes) as real subprocesses on a simulated clock
(``[testing] clock_file``, pipeline/clock.py), against a loopback HTTP server that
publishes a new day of listings every simulated day (arXiv RSS, the arXiv API, Hugging
Face daily papers), an aiosmtpd server that records every message it accepts, and the
daemon's own web endpoints, pressed by simulated readers. Faults come from a seeded
schedule; the invariants of issue 18 are checked after every simulated day and at the end,
from the SMTP server's record and the database. docs/soak.md describes all of it.

    python bench/soak.py --profile short --db sqlite --seed 1
    python bench/soak.py --profile long --db postgresql --seed 1 --json

On failure the seed, the fault schedule and a per-day ledger are written to a directory
(printed), and ``--seed`` replays the same schedule.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import email
import email.policy
import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from aiosmtpd.smtp import SMTP, Envelope, Session  # noqa: E402
from sqlalchemy import create_engine, select, text  # noqa: E402
from sqlalchemy.engine import Engine  # noqa: E402

from pipeline.clock import write_instant  # noqa: E402
from pipeline.cycle.plan import profile_with_feedback  # noqa: E402
from pipeline.domain import Profile  # noqa: E402
from pipeline.progress import Progress, progress_for  # noqa: E402
from pipeline.schedule.periods import due_periods, latest_due_period  # noqa: E402
from pipeline.store.rows import DELIVERIES, DELIVERY_ITEMS, SUBSCRIBERS, FeedbackRow, RunRow  # noqa: E402
from pipeline.store.subscribers import reader_schedule  # noqa: E402
from tests.ingest_fakes import (  # noqa: E402
    Item,
    Request,
    arxiv_api_page,
    arxiv_rss_listing,
    start_server,
    stop_server,
)
from tests.smtpd import RecordingHandler, SmtpServerThread  # noqa: E402

FEEDBACK = FeedbackRow.__table__
RUNS = RunRow.__table__
PG_BASE = os.environ.get("PAPERPOST_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
SECRET = "soak-secret-0123456789abcdef"
ADMIN = "soak-admin-0123456789abcdef"

# -- bounds (docs/soak.md) ---------------------------------------------------------------------
MEMORY_BOUND_MB = 400  # RSS of every daemon and worker process, sampled at every step
DRAIN_SIMULATED = timedelta(hours=3)  # after the faults stop, no open row within this ...
DRAIN_REAL_SECONDS = 180.0  # ... and this much wall time
SETTLE_SECONDS = 10.0  # wall time to wait for a step to settle before nudging the clock
STEP_CAP = timedelta(hours=2)  # the clock never advances further at once (but the 2 h jump)

ZONES = (
    "Europe/London",
    "America/New_York",
    "Australia/Sydney",
    "Asia/Tokyo",
    "Asia/Kolkata",
    "America/Los_Angeles",
    "Europe/Berlin",
    "UTC",
)
KINDS = ("query", "categories", "authors", "about", "liked", "trending")
FREQUENCIES = (
    "daily",
    "weekdays",
    "weekly:sun",
    "cron:0 7,19 * * *",
    "daily",
    "cron:30 6 * * 1-5",
    "weekly:mon",
)
SEND_AT = ("07:00", "01:30", "18:30", "02:30")  # 01:30 and 02:30 meet the DST hours
QUERIES = (
    'abs:"language model"',
    "ti:segmentation OR abs:segmentation",
    "abs:(diffusion AND image)",
    "abs:reinforcement OR ti:agent*",
    "ti:benchmark OR abs:benchmark",
    "abs:(3D AND reconstruction)",
)
CATEGORIES = (("cs.CV",), ("cs.CL",), ("cs.AI", "cs.LG"), ("cs.RO", "cs.GR"))
AUTHOR_POOL = tuple(
    f"{first} {last}"
    for first, last in zip(
        [
            "Ada",
            "Alan",
            "Grace",
            "Edsger",
            "Barbara",
            "Donald",
            "Frances",
            "Leslie",
            "Radia",
            "Shafi",
            "Tim",
            "Margaret",
        ],
        [
            "Lovelace",
            "Turing",
            "Hopper",
            "Dijkstra",
            "Liskov",
            "Knuth",
            "Allen",
            "Lamport",
            "Perlman",
            "Goldwasser",
            "Berners",
            "Hamilton",
        ],
        strict=True,
    )
)
ABOUT = (
    "efficient inference for large language models",
    "image generation with diffusion models",
    "robot manipulation and grasping",
    "evaluation benchmarks for reasoning",
    "speech recognition and audio models",
    "medical image segmentation",
)
FAULT_KINDS = (
    "kill9_daemon",
    "kill9_worker",
    "kill9_both",
    "sigterm_restart",
    "sighup_valid",
    "sighup_invalid",
    "smtp_421",
    "smtp_451",
    "smtp_550",
    "smtp_drop_after_dot",
    "smtp_down_hour",
    "smtp_tarpit",
    "feed_500",
    "feed_429",
    "feed_garbage",
    "feed_entity_bomb",
    "feed_down_2days",
    "pg_terminate",
    "clock_jump_2h",
)
PG_ONLY = {"kill9_worker", "kill9_both", "pg_terminate"}
# Needs root and `mount -t tmpfs`; the embedded runner only (workers keep their mailer).
MAILDIR_FULL = "maildir_disk_full"
# Injected right after the clock steps, while the step's digests are being sent; the
# others once the step has settled.
DURING_STEP = {"kill9_daemon", "kill9_worker", "kill9_both", "sigterm_restart", "pg_terminate"}


@dataclass(frozen=True)
class SoakProfile:
    name: str
    days: int
    readers: int
    start: datetime  # the simulated start; chosen so the run crosses DST changes
    papers_per_day: int


PROFILES = {
    # 23-26 Oct 2026: Europe/London (and Berlin) leave summer time on the 25th, 01:00 UTC.
    "short": SoakProfile("short", 3, 60, datetime(2026, 10, 23, 12, tzinfo=UTC), 24),
    # 3 Oct - 2 Nov 2026: Sydney starts summer time on 4 Oct, London ends it on 25 Oct,
    # New York on 1 Nov.
    "long": SoakProfile("long", 30, 300, datetime(2026, 10, 3, 0, tzinfo=UTC), 30),
}


# -- the corpus and the listings ------------------------------------------------------------------
@dataclass(frozen=True)
class Paper:
    arxiv_id: str
    title: str
    abstract: str
    categories: tuple[str, ...]
    authors: tuple[str, ...]


def load_corpus() -> list[Paper]:
    """Real titles and abstracts (bench/data, arXiv cs 2025); authors drawn from a small
    pool by a hash of the id, so author profiles have something to match."""
    papers = []
    with open(ROOT / "bench" / "data" / "arxiv_cs_dev_2025.jsonl", encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            h = int(hashlib.sha256(d["id"].encode()).hexdigest(), 16)
            authors = tuple(
                AUTHOR_POOL[(h >> (8 * k)) % len(AUTHOR_POOL)] for k in range(2 + h % 3)
            )
            papers.append(
                Paper(
                    d["id"],
                    d["title"],
                    d["abstract"],
                    tuple(d["categories"]),
                    tuple(dict.fromkeys(authors)),
                )
            )
    return papers


class Listings:
    """What the loopback server publishes: day ``n`` (0 = the start) brings
    ``papers_per_day`` new papers, a few new versions of older ones and cross-listings."""

    def __init__(self, profile: SoakProfile, seed: int) -> None:
        self.corpus = load_corpus()
        self.rng = random.Random(seed * 7919 + 1)
        self.rng.shuffle(self.corpus)
        self.per_day = profile.papers_per_day
        self.start = profile.start

    def day_index(self, now: datetime) -> int:
        return max(0, (now.date() - self.start.date()).days)

    def new_papers(self, day: int) -> list[Paper]:
        return self.corpus[day * self.per_day : (day + 1) * self.per_day]

    def replaced(self, day: int) -> list[Paper]:
        """New versions of papers first listed 1-3 days earlier (the same ids, version 2+)."""
        if day == 0:
            return []
        older = [p for d in range(max(0, day - 3), day) for p in self.new_papers(d)]
        rng = random.Random(day)
        return rng.sample(older, min(3, len(older)))

    def items(self, day: int, channel: str) -> list[Item]:
        """An RSS listing for ``channel``: its new papers (primary category), cross-listed
        ones (another category matches) and replacements."""
        out = []
        for p in self.new_papers(day):
            if p.categories[0] == channel:
                out.append(self._item(p, 1, "new"))
            elif channel in p.categories[1:] or (channel == "cs.CL" and "cs.AI" in p.categories):
                out.append(self._item(p, 1, "cross"))
        for p in self.replaced(day):
            if channel in p.categories:
                out.append(self._item(p, 2 + day % 2, "replace"))
        return out

    def _item(self, p: Paper, version: int, kind: str) -> Item:
        return Item(
            arxiv_id=p.arxiv_id,
            version=version,
            title=p.title,
            abstract=p.abstract,
            authors=p.authors,
            categories=p.categories,
            announce_type=kind,
        )

    def api_items(self, day: int) -> list[Item]:
        """The arXiv API query (cs.AI/cs.LG, newest first): the last three days, so a
        source that was down catches up."""
        out = []
        for d in range(day, max(-1, day - 3), -1):
            for p in self.new_papers(d):
                if {"cs.AI", "cs.LG"} & set(p.categories):
                    out.append(self._item(p, 1, "new"))
        return out

    def hf_json(self, day: int) -> bytes:
        """Hugging Face daily papers: a handful of the day's papers, with upvotes."""
        picked = self.new_papers(day)[:: max(1, self.per_day // 6)]
        stamp = (self.start.date() + timedelta(days=day)).isoformat() + "T00:00:00.000Z"
        return json.dumps(
            [
                {
                    "paper": {
                        "id": p.arxiv_id,
                        "title": p.title,
                        "summary": p.abstract,
                        "authors": [{"name": a, "hidden": False} for a in p.authors],
                        "publishedAt": stamp,
                        "upvotes": 5 + (i * 7) % 40,
                    },
                    "title": p.title,
                }
                for i, p in enumerate(picked)
            ]
        ).encode()


GARBAGE = b"<rss><channel><item><title>unterminated \x00\xff\xfe garbage"
ENTITY_BOMB = (
    b'<?xml version="1.0"?>\n<!DOCTYPE lolz [<!ENTITY lol "lol">'
    + b"".join(
        f'<!ENTITY lol{i} "{("&lol" + str(i - 1) + ";") * 10 if i > 1 else "&lol;" * 10}">'.encode()
        for i in range(1, 10)
    )
    + b"]>\n<rss><channel><title>&lol9;</title></channel></rss>\n"
)


# -- the SMTP server --------------------------------------------------------------------------
@dataclass
class Received:
    real: float  # time.monotonic() when accepted
    simulated: str
    rcpt: tuple[str, ...]
    data: bytes
    message_id: str
    dropped: bool = False  # recorded, then the connection dropped after the final dot
    # Parsed once, on the first check (the per-day checks then cost only the new mail).
    papers: frozenset[str] | None = None
    problems: list[Violation] | None = None


class SoakSmtp(RecordingHandler):
    """Records every message (with the simulated time) and plays the schedule's faults:
    ``rcpt_reply`` (address -> "451 ..." etc.), ``drop_next`` (drop after the final dot
    for that many messages), ``tarpit`` (seconds before each DATA reply)."""

    def __init__(self, clock: Any) -> None:
        super().__init__()
        self.clock = clock
        self.log: list[Received] = []
        self.rcpt_reply: dict[str, str] = {}
        self.drop_next = 0
        self.tarpit = 0.0
        self.lock = threading.Lock()

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> Any:
        self.commands.append("RCPT")
        reply = self.rcpt_reply.get(address.lower())
        if reply is None:
            envelope.rcpt_tos.append(address)
            return "250 OK"
        if reply.startswith("421"):
            asyncio.get_running_loop().call_soon(_close, server)
        return reply

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.commands.append("DATA")
        if self.tarpit:
            await asyncio.sleep(self.tarpit)
        data = envelope.original_content
        assert isinstance(data, bytes)
        with self.lock:
            drop = self.drop_next > 0
            if drop:
                self.drop_next -= 1
            self.log.append(
                Received(
                    time.monotonic(),
                    self.clock().isoformat(),
                    tuple(a.lower() for a in envelope.rcpt_tos),
                    data,
                    _message_id(data),
                    dropped=drop,
                )
            )
        if drop:
            _close(server)
            return "250 2.0.0 never seen by the client"
        return f"250 2.0.0 Ok: queued as {len(self.log)}"


def _close(server: SMTP) -> None:
    if server.transport is not None:
        server.transport.close()


def _message_id(data: bytes) -> str:
    m = re.search(rb"^Message-ID:\s*(<[^>]+>)", data, re.M | re.I)
    return m.group(1).decode() if m else ""


class SoakSmtpServer(SmtpServerThread):
    """``SmtpServerThread`` that can go down (connections refused) and come back on the
    same port."""

    def down(self) -> None:
        async def close() -> None:
            assert self._server is not None
            self._server.close()
            await self._server.wait_closed()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=30)

    def up(self) -> None:
        async def open_again() -> None:
            self._server = await self._loop.create_server(
                lambda: self._smtp_class(self.handler, **self._smtp_kwargs),
                host="127.0.0.1",
                port=self.port,
                reuse_address=True,
            )

        asyncio.run_coroutine_threadsafe(open_again(), self._loop).result(timeout=30)


# -- the population ---------------------------------------------------------------------------
@dataclass
class Reader:
    email: str
    kind: str
    timezone: str
    frequency: str
    send_at: str
    interests: dict[str, Any]
    trending: int = 0


def population(profile: SoakProfile, seed: int, listings: Listings) -> list[Reader]:
    rng = random.Random(seed)
    liked_pool = [p.arxiv_id for p in listings.new_papers(0)]
    out = []
    for i in range(profile.readers):
        kind = KINDS[i % len(KINDS)]
        tz = ZONES[(i + i // len(KINDS)) % len(ZONES)]
        frequency = FREQUENCIES[(i // 2) % len(FREQUENCIES)]
        send_at = SEND_AT[rng.randrange(len(SEND_AT))]
        interests: dict[str, Any] = {}
        trending = 0
        if kind == "query":
            interests["query"] = rng.choice(QUERIES)
        elif kind == "categories":
            interests["categories"] = list(rng.choice(CATEGORIES))
        elif kind == "authors":
            interests["authors"] = rng.sample(AUTHOR_POOL, 2)
        elif kind == "about":
            interests["about"] = rng.choice(ABOUT)
        elif kind == "liked":
            interests["like"] = rng.sample(liked_pool, min(3, len(liked_pool)))
        else:
            trending = 5
            interests["categories"] = ["cs.CV"]
        out.append(
            Reader(f"reader{i:03d}@soak.example", kind, tz, frequency, send_at, interests, trending)
        )
    return out


def _toml_value(v: Any) -> str:
    return json.dumps(v)


def subscribers_toml(readers: list[Reader]) -> str:
    parts = []
    for r in readers:
        parts.append(
            "\n[[subscribers]]\n"
            f"email = {_toml_value(r.email)}\ntimezone = {_toml_value(r.timezone)}\n"
            f"frequency = {_toml_value(r.frequency)}\nsend_at = {_toml_value(r.send_at)}\n"
            f'max_items = 8\non_empty = "send"\ntrending = {r.trending}\n'
            "[subscribers.interests]\n"
            + "".join(f"{k} = {_toml_value(v)}\n" for k, v in r.interests.items())
        )
    return "".join(parts)


# -- the fault schedule -----------------------------------------------------------------------
@dataclass
class Fault:
    at: str  # the simulated instant (ISO) of the step it is injected after
    kind: str
    detail: dict[str, Any] = field(default_factory=dict)


def fault_schedule(
    steps: list[datetime],
    kinds: list[str],
    seed: int,
    days: int,
    busy: dict[datetime, int] | None = None,
) -> list[Fault]:
    """Each kind at least once, more in longer runs, on seeded random steps of the run's
    first 85 % (the rest is for the drain). The kinds that strike while a step sends
    (``DURING_STEP``) pick among the busiest quarter of those steps (``busy``: readers
    due per step), so a kill finds digests in flight."""
    rng = random.Random(seed * 31 + 7)
    usable = steps[1 : max(2, int(len(steps) * 0.85))]
    ranked = sorted(usable, key=lambda t: -(busy or {}).get(t, 0))
    busiest = sorted(ranked[: max(3, len(ranked) // 4)])
    count = max(1, days // 3)
    faults = []
    for kind in kinds:
        pool = busiest if kind in DURING_STEP else usable
        for _ in range(count):
            faults.append(
                Fault(rng.choice(pool).isoformat(), kind, {"seed": rng.randrange(1 << 30)})
            )
    faults.sort(key=lambda f: (f.at, f.kind))
    return faults


def step_instants(readers: list[Reader], start: datetime, end: datetime) -> list[datetime]:
    """Every due instant of every reader in (start, end], each UTC midnight + 5 minutes
    (the new listings), capped at STEP_CAP apart."""
    instants: set[datetime] = set()
    for r in readers:
        for period in due_periods(reader_schedule(r.frequency, r.send_at, r.timezone), start, end):
            instants.add(period.due_at)
    day = start.date()
    while datetime.combine(day, datetime.min.time(), UTC) <= end:
        t = datetime.combine(day, datetime.min.time(), UTC) + timedelta(minutes=5)
        if start < t <= end:
            instants.add(t)
        day += timedelta(days=1)
    out: list[datetime] = []
    last = start
    for t in sorted(instants):
        while t - last > STEP_CAP:
            last = last + STEP_CAP
            out.append(last)
        out.append(t)
        last = t
    return out


# -- the processes ----------------------------------------------------------------------------
CONFIG = """
[database]
url = "{db_url}"

[mail]
from = "Paperpost soak <digest@paperpost.example>"
transport = "{transport}"
list_name = "{list_name}"
unsubscribe_mailto = "unsubscribe@paperpost.example"
concurrency = 2
batch_size = 25

[mail.maildir]
path = "{maildir}"

[mail.smtp]
host = "127.0.0.1"
port = {smtp_port}
security = "none"
timeout_seconds = 10
data_timeout_seconds = 10
max_per_connection = 1000

[web]
base_url = "http://127.0.0.1:{web_port}"
allow_insecure_links = true
listen_port = {web_port}
secret_env = "PAPERPOST_SOAK_SECRET"
admin_token_env = "PAPERPOST_SOAK_ADMIN"
subscribe_per_address_per_hour = 100
subscribe_per_client_per_hour = 10000

[render]
preview_dir = "{directory}/previews"

[ingest]
interval_minutes = 240
connect_timeout_seconds = 5
read_timeout_seconds = 10
deadline_seconds = 30
max_decoded_bytes = 4194304

[schedule]
first_digest_days = 2
dispatch_every_seconds = 5

[daemon]
runner = "{runner}"
grace_seconds = 5
lease_seconds = 10

[worker]
concurrency = 2
delivery_jobs = 2
sweep_seconds = 5

[testing]
clock_file = "clock"
{sources}
"""

SOURCES = """
[[sources]]
name = "arxiv-cs-cv"
kind = "arxiv-rss"
url = "{base}/rss/cs.CV"
allow_private = true

[[sources]]
name = "arxiv-cs-cl"
kind = "arxiv-rss"
url = "{base}/rss/cs.CL"
allow_private = true

[[sources]]
name = "arxiv-api-ai"
kind = "arxiv-api"
url = "{base}/api/query?search_query=cat:cs.AI"
allow_private = true

[[sources]]
name = "hf-daily"
kind = "hf-daily"
url = "{base}/hf/daily_papers"
allow_private = true
"""


def _rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class Proc:
    """One ``paperpost`` subprocess (daemon or worker), its log appended to a file."""

    def __init__(self, kind: str, config: Path, log: Path, env: dict[str, str]) -> None:
        self.kind, self.config, self.log_path, self.env = kind, config, log, env
        self.proc: subprocess.Popen[bytes] | None = None
        self.pids: list[int] = []

    def start(self) -> None:
        with open(self.log_path, "ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pipeline.cli", "-c", str(self.config), self.kind],
                cwd=ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        self.pids.append(self.proc.pid)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(sig)

    def wait(self, timeout: float = 60) -> int | None:
        if self.proc is None:
            return None
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(timeout=30)

    def stop(self) -> int | None:
        self.signal(signal.SIGTERM)
        return self.wait(60)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""


# -- the run ----------------------------------------------------------------------------------
@dataclass
class Violation:
    invariant: int
    what: str


@dataclass
class DayLedger:
    day: str
    steps: int = 0
    nudges: int = 0
    unsettled: int = 0
    faults: list[str] = field(default_factory=list)
    actions: Counter[str] = field(default_factory=Counter)
    digests_received: int = 0
    outbox: dict[str, int] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    max_rss_mb: float = 0.0


@dataclass
class Result:
    profile: str
    db: str
    seed: int
    days: int
    readers: int
    faults: Counter[str]
    invariants_held: bool
    violations: list[Violation]
    digests_sent: int
    messages_received: int
    seconds: float
    drain_seconds: float
    drain_simulated_minutes: float
    max_rss_mb: dict[str, float]
    ledger: list[DayLedger]
    checked: dict[str, int]
    left_out: list[str]
    directory: str

    def summary(self) -> dict[str, Any]:
        d = asdict(self)
        d["faults"] = dict(self.faults)
        d["violations"] = [asdict(v) for v in self.violations]
        d["ledger"] = [{**asdict(day), "actions": dict(day.actions)} for day in self.ledger]
        return d


class Soak:
    def __init__(
        self,
        *,
        profile: SoakProfile,
        db: str,
        seed: int,
        directory: Path,
        pg_url: str | None = None,
        log: Any = None,
        progress: Progress | None = None,
    ) -> None:
        self.profile, self.db, self.seed, self.dir = profile, db, seed, directory
        self.pg_url = pg_url
        self.say = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        # a step per simulated day (its note: faults, digests, outbox, violations) and
        # one over the run's step instants
        self.progress = progress or Progress()
        self.rng = random.Random(seed * 101 + 3)
        self.now = profile.start
        self.clock_file = directory / "clock"
        self.listings = Listings(profile, seed)
        self.readers = population(profile, seed, self.listings)
        self.violations: list[Violation] = []
        self.ledger: list[DayLedger] = []
        self.day = DayLedger(profile.start.date().isoformat())
        self.faults_done: Counter[str] = Counter()
        self.in_flight_at_stop: set[int] = set()  # rows 'sending' when their process died
        self.dead_runs: set[int] = set()  # ingest runs left open by a killed process
        self.max_rss: dict[str, float] = defaultdict(float)
        # (email, period key) the schedule made due while the reader was active
        self.expected: dict[tuple[str, str], str] = {}
        # reader -> list of (simulated instant, status) changes the harness made
        self.status_changes: dict[str, list[tuple[float, str]]] = defaultdict(list)
        self.presses: list[tuple[str, str, str, datetime]] = []  # email, paper, signal, when
        self.pending_signups: dict[str, float] = {}  # email -> real time of the request
        self.confirmed: dict[str, float] = {}
        self.feed_mode: dict[str, tuple[str, datetime]] = {}  # route -> (mode, until)
        self.smtp_down_until: datetime | None = None
        self.smtp_faults_until: datetime | None = None
        self.left_out: list[str] = []
        self.maildir_mode = False  # delivering into the (full) tmpfs Maildir
        self.maildir_mount = directory / "maildir-tmpfs"
        self.maildir_until: datetime | None = None
        self.maildir_mark = 0  # the daemon log's length when the disk filled
        self.app_name = ""  # PostgreSQL: the application_name of the soak's connections
        self.checked: dict[str, int] = {}  # how much each invariant looked at (never vacuous)
        self.list_name = "Paperpost soak"

    # -- set-up ----------------------------------------------------------------------------
    def _db_url(self) -> str:
        if self.db == "sqlite":
            return f"sqlite:///{self.dir / 'paperpost.db'}"
        assert self.pg_url is not None
        return self.pg_url

    def write_config(self, *, invalid: bool = False) -> None:
        text_ = CONFIG.format(
            db_url=self._db_url(),
            list_name=self.list_name,
            transport="maildir" if self.maildir_mode else "smtp",
            maildir=self.maildir_mount,
            smtp_port=self.smtp.port,
            web_port=self.web_port,
            directory=self.dir,
            runner="procrastinate" if self.db == "postgresql" else "embedded",
            sources=SOURCES.format(base=f"http://127.0.0.1:{self.http.server.port}"),
        )
        text_ += subscribers_toml(self.readers)
        if invalid:
            text_ = text_.replace('timezone = "Europe/London"', 'timezone = "Europe/Londn"', 1)
        tmp = self.config.with_suffix(".tmp")
        tmp.write_text(text_, encoding="utf-8")
        os.replace(tmp, self.config)

    def _routes(self) -> None:
        server = self.http.server

        def route(name: str, body: Any) -> Any:
            def handle(r: Request) -> None:
                mode = self.feed_mode.get(name)
                if mode is not None and self.now < mode[1]:
                    kind = mode[0]
                    if kind == "500":
                        r.send(500, b"internal error")
                        return
                    if kind == "429":
                        r.send(429, b"slow down", {"Retry-After": "120"})
                        return
                    if kind == "garbage":
                        r.send(200, GARBAGE, {"Content-Type": "application/rss+xml"})
                        return
                    if kind == "bomb":
                        r.send(200, ENTITY_BOMB, {"Content-Type": "application/xml"})
                        return
                    if kind == "down":
                        r.close_connection = True
                        with contextlib.suppress(OSError):
                            r.connection.shutdown(2)
                        return
                r.send(200, body(self.listings.day_index(self.now)), {"Content-Type": "text/xml"})

            return handle

        day_of = self.listings
        start = self.profile.start
        for channel in ("cs.CV", "cs.CL"):
            server.routes[f"/rss/{channel}"] = route(
                f"/rss/{channel}",
                lambda d, c=channel: arxiv_rss_listing(
                    day_of.items(d, c), day=start + timedelta(days=d), channel=c
                ),
            )
        server.routes["/api/query"] = route(
            "/api/query",
            lambda d: arxiv_api_page(day_of.api_items(d), total=len(day_of.api_items(d)), start=0),
        )
        server.routes["/hf/daily_papers"] = route("/hf/daily_papers", day_of.hf_json)

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        write_instant(self.clock_file, self.now)
        from pipeline.clock import FileClock

        self.sim_clock = FileClock(self.clock_file)
        self.handler = SoakSmtp(self.sim_clock)
        self.smtp = SoakSmtpServer(self.handler)
        self.smtp.start()
        self.http = start_server()
        self._routes()
        from tests.daemon_harness import free_port

        self.web_port = free_port()
        self.config = self.dir / "paperpost.toml"
        self.write_config()
        self.env = {
            **os.environ,
            "PAPERPOST_TESTING": "1",
            "PAPERPOST_SOAK_SECRET": SECRET,
            "PAPERPOST_SOAK_ADMIN": ADMIN,
        }
        self.engine: Engine = create_engine(self._db_url(), pool_pre_ping=True)
        if self.db == "postgresql":
            code = subprocess.run(
                [sys.executable, "-m", "pipeline.cli", "-c", str(self.config), "db", "upgrade"],
                cwd=ROOT,
                env=self.env,
                capture_output=True,
                text=True,
                check=False,
            )
            if code.returncode:
                raise RuntimeError(f"db upgrade failed: {code.stderr}")
        self.daemon = Proc("daemon", self.config, self.dir / "daemon.log", self.env)
        self.daemon.start()
        self.workers = []
        if self.db == "postgresql":
            for n in range(2):
                w = Proc("worker", self.config, self.dir / f"worker{n}.log", self.env)
                w.start()
                self.workers.append(w)
        self._wait_web()

    def _wait_web(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self._url("/healthz"), timeout=2) as r:
                    if r.status == 200:
                        return
            except (OSError, urllib.error.URLError):
                pass
            if not self.daemon.alive():
                raise RuntimeError("the daemon died at start:\n" + self.daemon.log_text()[-3000:])
            time.sleep(0.1)
        raise RuntimeError("the daemon's web server did not come up")

    def _url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.web_port}{path}"

    def close(self) -> None:
        for p in [self.daemon, *self.workers]:
            with contextlib.suppress(Exception):
                p.stop()
        if self.maildir_until is not None:
            subprocess.run(["umount", str(self.maildir_mount)], check=False)
        received = self.dir / "received"  # every accepted message, for the report's reader
        received.mkdir(exist_ok=True)
        for n, rec in enumerate(self.handler.log):
            (received / f"{n:05d}{'-dropped' if rec.dropped else ''}.eml").write_bytes(rec.data)
        with contextlib.suppress(Exception):
            self.smtp.stop()
        with contextlib.suppress(Exception):
            stop_server(self.http)
        with contextlib.suppress(Exception):
            self.engine.dispose()

    # -- the clock -------------------------------------------------------------------------
    def set_clock(self, t: datetime) -> None:
        self.now = t
        write_instant(self.clock_file, t)

    # -- reading the database --------------------------------------------------------------
    def rows(self) -> list[Any]:
        d = DELIVERIES.c
        with self.engine.connect() as conn:
            return list(
                conn.execute(
                    select(
                        d.id,
                        d.subscriber_id,
                        d.period_key,
                        d.status,
                        d.next_attempt_at,
                        d.message_id,
                        d.last_error,
                        d.server_reply,
                        d.claimed_by,
                        d.created_at,
                    )
                )
            )

    def subscribers(self) -> list[Any]:
        s = SUBSCRIBERS.c
        with self.engine.connect() as conn:
            return list(
                conn.execute(
                    select(
                        s.id,
                        s.email,
                        s.status,
                        s.frequency,
                        s.send_at,
                        s.timezone,
                        s.paused_until,
                        s.on_empty,
                    )
                )
            )

    def open_ingest_runs(self) -> set[int]:
        with self.engine.connect() as conn:
            return {
                r.id
                for r in conn.execute(
                    select(RUNS.c.id).where(RUNS.c.kind == "ingest", RUNS.c.finished_at.is_(None))
                )
            }

    def unfinished_ingest(self) -> int:
        """Open ingest runs of live processes (a killed process's open run is closed by
        planning's fence 30 simulated minutes later; it does not hold a step)."""
        return len(self.open_ingest_runs() - self.dead_runs)

    def settled(self) -> tuple[bool, str]:
        """Every active reader's latest due period has a row, nothing is claimed or sending,
        nothing pending or deferred is due (unless the SMTP server is down), no ingest run
        is open."""
        now = self.now
        rows = self.rows()
        present = {(r.subscriber_id, r.period_key) for r in rows}
        for s in self.subscribers():
            if s.status != "active" or (s.paused_until and s.paused_until > now):
                continue
            p = latest_due_period(reader_schedule(s.frequency, s.send_at, s.timezone), now)
            if p is not None and (s.id, p.key) not in present:
                return False, f"{s.email} has no row for {p.key}"
        smtp_down = self.smtp_down_until is not None and now < self.smtp_down_until
        for r in rows:
            if r.status in ("claimed", "sending"):
                return False, f"row {r.id} {r.status}"
            if r.status in ("pending", "deferred") and r.next_attempt_at <= now and not smtp_down:
                return False, f"row {r.id} {r.status} and due"
        if self.unfinished_ingest():
            return False, "an ingest run is open"
        return True, ""

    def settle(self) -> None:
        """Wait for the step to settle; nudge the clock a minute forward when it does not
        (a dead daemon's lease runs out in simulated time). Every clock reading the system
        may plan at is noted for invariant 1 (:meth:`note_due`)."""
        self.note_due()
        self._watch_processes()
        for nudge in range(6):
            deadline = time.monotonic() + SETTLE_SECONDS
            while time.monotonic() < deadline:
                ok, why = self.settled()
                if ok:
                    return
                self._watch_processes()
                time.sleep(0.1)
            if nudge < 5:
                self.day.nudges += 1
                self.say(f"  [{self.now.isoformat()}] not settled ({why}); nudging the clock")
                self.set_clock(self.now + timedelta(minutes=1))
                self.note_due()
        self.day.unsettled += 1
        self.say(f"  [{self.now.isoformat()}] still not settled: {why}")

    def _watch_processes(self) -> None:
        for p in [self.daemon, *self.workers]:
            if not p.alive():
                code = p.proc.returncode if p.proc else "?"
                self.say(f"  {p.kind} {p.pid} exited ({code}); restarting")
                self.violations.append(
                    Violation(
                        8, f"{p.kind} pid {p.pid} exited on its own at {self.now.isoformat()}"
                    )
                )
                p.start()
        for p in [self.daemon, *self.workers]:
            if p.alive():
                rss = _rss_mb(p.pid)
                key = p.kind if p.kind == "daemon" else "worker"
                self.max_rss[key] = max(self.max_rss[key], rss)
                self.day.max_rss_mb = max(self.day.max_rss_mb, rss)

    # -- expectations ----------------------------------------------------------------------
    def note_due(self) -> None:
        """Record, for every reader active now, the period the schedule makes due (the
        project's own schedule functions, independently of the outbox)."""
        for s in self.subscribers():
            if s.status != "active" or (s.paused_until and s.paused_until > self.now):
                continue
            p = latest_due_period(reader_schedule(s.frequency, s.send_at, s.timezone), self.now)
            if p is not None and p.due_at > self.profile.start - timedelta(days=8):
                self.expected.setdefault((s.email, p.key), self.now.isoformat())

    # -- faults ----------------------------------------------------------------------------
    def inject(self, fault: Fault) -> None:
        kind = fault.kind
        rng = random.Random(fault.detail.get("seed", 0))
        self.faults_done[kind] += 1
        self.day.faults.append(f"{self.now.isoformat()} {kind}")  # in the day's note
        if kind == "kill9_daemon":
            self._kill([self.daemon], signal.SIGKILL)
        elif kind == "kill9_worker" and self.workers:
            self._kill([rng.choice(self.workers)], signal.SIGKILL)
        elif kind == "kill9_both":
            self._kill(
                [self.daemon, *([rng.choice(self.workers)] if self.workers else [])], signal.SIGKILL
            )
        elif kind == "sigterm_restart":
            self._kill([self.daemon], signal.SIGTERM)
        elif kind == "sighup_valid":
            # A new list name, and one daily reader's send time moved (rows already
            # planned stay as planned; the next period follows the new time).
            self.list_name = f"Paperpost soak {self.faults_done[kind]}"
            moved = rng.choice([r for r in self.readers if r.frequency == "daily"])
            moved.send_at = rng.choice([t for t in SEND_AT if t != moved.send_at])
            fault.detail["moved"] = f"{moved.email} to {moved.send_at}"
            self.write_config()
            mark = len(self.daemon.log_text())
            self.daemon.signal(signal.SIGHUP)
            self._wait_log(self.daemon, "config reloaded", mark)
        elif kind == "sighup_invalid":
            self.write_config(invalid=True)
            mark = len(self.daemon.log_text())
            self.daemon.signal(signal.SIGHUP)
            self._wait_log(self.daemon, "reload rejected", mark)
            self.write_config()
        elif kind in ("smtp_421", "smtp_451", "smtp_550"):
            code = kind[-3:]
            reply = {
                "421": "421 4.3.2 Service shutting down",
                "451": "451 4.7.1 Greylisted, try again later",
                "550": "550 5.1.1 No such user here",
            }[code]
            until_end = bool(fault.detail.get("until_end"))
            victims = rng.sample([r.email for r in self.readers], 8 if until_end else 3)
            for v in victims:
                self.handler.rcpt_reply[v] = reply
            until = self.now + timedelta(days=365 if until_end else 0, hours=6)
            self.smtp_faults_until = max(self.smtp_faults_until or until, until)
            fault.detail["recipients"] = victims
        elif kind == "smtp_drop_after_dot":
            self.handler.drop_next += 2
        elif kind == "smtp_down_hour":
            self.smtp.down()
            self.smtp_down_until = self.now + timedelta(hours=1)
        elif kind == "smtp_tarpit":
            self.handler.tarpit = 1.5
            until = self.now + timedelta(hours=3)
            self.smtp_faults_until = max(self.smtp_faults_until or until, until)
        elif kind.startswith("feed_"):
            mode = {
                "feed_500": "500",
                "feed_429": "429",
                "feed_garbage": "garbage",
                "feed_entity_bomb": "bomb",
                "feed_down_2days": "down",
            }[kind]
            route = rng.choice(["/rss/cs.CV", "/rss/cs.CL", "/api/query", "/hf/daily_papers"])
            hours = 48 if mode == "down" else 6
            self.feed_mode[route] = (mode, self.now + timedelta(hours=hours))
            fault.detail["route"] = route
        elif kind == "pg_terminate":
            with self.engine.connect() as conn:
                conn.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE application_name = :app AND pid <> pg_backend_pid()"
                    ),
                    {"app": self.app_name},
                )
                conn.commit()
            # An ingest job whose connection was cut leaves its run open; planning's fence
            # closes it after 30 simulated minutes. It does not hold the steps meanwhile.
            time.sleep(1.0)
            self.dead_runs |= self.open_ingest_runs()
        elif kind == "clock_jump_2h":
            self.set_clock(self.now + timedelta(hours=2))
        elif kind == MAILDIR_FULL:
            self._maildir_full()

    def _kill(self, procs: list[Proc], sig: signal.Signals) -> None:
        """Signal ``procs`` together while they send when possible (after the step's next
        message reaches the server, or 5 s), wait for them to exit, restart them."""
        seen = len(self.handler.log)
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and len(self.handler.log) == seen:
            time.sleep(0.005)
        pids = {p.pid for p in procs}
        for proc in procs:
            proc.signal(sig)
        for proc in procs:
            proc.wait(60)
        # Rows they left 'sending': the final dot may have gone out (invariant 2 allows
        # them to be ambiguous).
        for r in self.rows():
            if r.status == "sending" and _pid_of(r.claimed_by) in pids:
                self.in_flight_at_stop.add(r.id)
        if sig == signal.SIGKILL:
            self.dead_runs |= self.open_ingest_runs()
        for proc in procs:
            proc.start()
        if self.daemon in procs:
            self._wait_web()
            if sig == signal.SIGKILL:
                # The dead daemon's lease outlives it by [daemon] lease_seconds of simulated
                # time: move the clock a minute on so the new one takes over.
                self.note_due()
                self.day.nudges += 1
                self.set_clock(self.now + timedelta(minutes=1))

    def _wait_log(self, proc: Proc, needle: str, mark: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in proc.log_text()[mark:]:
                return
            time.sleep(0.05)
        self.violations.append(Violation(8, f"{proc.kind} did not log {needle!r} after SIGHUP"))

    def end_faults(self) -> None:
        now = self.now
        if self.maildir_until is not None and now >= self.maildir_until:
            # Full until a digest has met the full disk (or for half a day at most).
            met = "No space left on device" in self.daemon.log_text()[self.maildir_mark :]
            if met or now >= self.maildir_until + timedelta(hours=10):
                self._maildir_freed()
        if self.smtp_down_until is not None and now >= self.smtp_down_until:
            self.smtp.up()
            self.smtp_down_until = None
        if self.smtp_faults_until is not None and now >= self.smtp_faults_until:
            self.handler.rcpt_reply.clear()
            self.handler.tarpit = 0.0
            self.smtp_faults_until = None

    def clear_faults(self) -> None:
        if self.maildir_until is not None:
            self._maildir_freed()
        if self.smtp_down_until is not None:
            self.smtp.up()
            self.smtp_down_until = None
        self.handler.rcpt_reply.clear()
        self.handler.tarpit = 0.0
        self.handler.drop_next = 0
        self.feed_mode.clear()

    # -- readers' actions (the real web endpoints) ------------------------------------------
    def _post(self, url: str, data: dict[str, str] | None = None) -> int:
        body = urllib.parse.urlencode(data or {}).encode()
        req = urllib.request.Request(
            url,
            data=body,
            method="POST",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return int(r.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)

    def _local_url(self, url: str) -> str:
        parts = urllib.parse.urlsplit(url)
        return self._url(parts.path)

    def latest_digest(self, address: str) -> tuple[str, str] | None:
        """(Message-ID, text part) of the newest digest this reader received."""
        for rec in reversed(self.handler.log):
            if address in rec.rcpt and not rec.dropped:
                msg = email.message_from_bytes(rec.data, policy=email.policy.default)
                part = msg.get_body(preferencelist=("plain",))
                if part is not None and "/feedback/" in part.get_content():
                    return rec.message_id, part.get_content()
        return None

    def act(self) -> None:
        """A few readers act: feedback presses, unsubscribes, resubscribes, sign-ups."""
        rng = self.rng
        emails = [r.email for r in self.readers]
        for _ in range(rng.randrange(1, 4)):
            who = rng.choice(emails)
            found = self.latest_digest(who)
            if found is None:
                continue
            message_id, body = found
            links = re.findall(r"(https?://\S+/feedback/\S+/(\d+)/(more|less))", body)
            if not links:
                continue
            url, n, sig = rng.choice(links)
            status = self._post(self._local_url(url))
            self.day.actions["feedback"] += 1
            paper = self._paper_at(message_id, int(n))
            if status == 200 and paper:
                self.presses.append((who, paper, sig, self.now))
            elif status not in (200, 410):
                self.violations.append(Violation(5, f"feedback press {url} answered {status}"))
        if rng.random() < 0.5:
            self._unsubscribe_or_back(rng)
        if rng.random() < 0.35:
            self._sign_up(rng)
        self._confirm_sign_ups()

    def _paper_at(self, message_id: str, n: int) -> str | None:
        """The paper behind a digest's ``n``-th feedback link (ranks count from 0)."""
        d, i = DELIVERIES.c, DELIVERY_ITEMS.c
        with self.engine.connect() as conn:
            row = conn.execute(
                select(i.paper_id)
                .join(DELIVERIES, d.id == i.delivery_id)
                .where(d.message_id == message_id, i.rank == n - 1)
            ).first()
        return None if row is None else str(row.paper_id)

    def _unsubscribe_or_back(self, rng: random.Random) -> None:
        status_of = {s.email: s.status for s in self.subscribers()}
        gone = [e for e, st in status_of.items() if st == "unsubscribed"]
        if gone and rng.random() < 0.5:
            who = rng.choice(gone)
            found = self._any_digest_text(who)
            if found is None:
                return
            m = re.search(r"Manage your subscription:\s+(\S+)", found)
            if not m:
                return
            code = self._post(self._local_url(m.group(1)), {"action": "resubscribe"})
            self.day.actions["resubscribe"] += 1
            if code == 200:
                self.status_changes[who].append((time.monotonic(), "active"))
            return
        active = [r.email for r in self.readers if status_of.get(r.email) == "active"]
        if not active:
            return
        who = rng.choice(active)
        found = self._any_digest_text(who)
        if found is None:
            return
        m = re.search(r"Unsubscribe \(opens a page where you confirm\):\s+(\S+)", found)
        if not m:
            return
        code = self._post(self._local_url(m.group(1)), {"List-Unsubscribe": "One-Click"})
        self.day.actions["unsubscribe"] += 1
        if code == 200:
            self.status_changes[who].append((time.monotonic(), "unsubscribed"))
        else:
            self.violations.append(Violation(4, f"unsubscribe of {who} answered {code}"))

    def _any_digest_text(self, address: str) -> str | None:
        for rec in reversed(self.handler.log):
            if address in rec.rcpt and not rec.dropped:
                msg = email.message_from_bytes(rec.data, policy=email.policy.default)
                part = msg.get_body(preferencelist=("plain",))
                if part is not None and "Unsubscribe" in part.get_content():
                    return str(part.get_content())
        return None

    def _sign_up(self, rng: random.Random) -> None:
        n = len(self.pending_signups) + len(self.confirmed)
        address = f"new{n:03d}.{self.seed}@soak.example"
        code = self._post(
            self._url("/subscribe"),
            {
                "email": address,
                "categories": rng.choice(CATEGORIES)[0],
                "about": rng.choice(ABOUT),
                "frequency": "daily",
                "send_at": rng.choice(SEND_AT),
                "timezone": rng.choice(ZONES),
            },
        )
        self.day.actions["subscribe"] += 1
        if code == 200:
            self.pending_signups[address] = time.monotonic()
        else:
            self.violations.append(Violation(4, f"sign-up of {address} answered {code}"))

    def _confirm_sign_ups(self) -> None:
        for address in list(self.pending_signups):
            for rec in self.handler.log:
                if address not in rec.rcpt:
                    continue
                msg = email.message_from_bytes(rec.data, policy=email.policy.default)
                part = msg.get_body(preferencelist=("plain",))
                body = part.get_content() if part is not None else ""
                m = re.search(r"(https?://\S+/confirm/\S+)", body)
                if not m:
                    continue
                code = self._post(self._local_url(m.group(1)))
                self.day.actions["confirm"] += 1
                if code == 200:
                    self.confirmed[address] = time.monotonic()
                    del self.pending_signups[address]
                    self.status_changes[address].append((time.monotonic(), "active"))
                break

    # -- invariants ------------------------------------------------------------------------
    def check(self, *, final: bool = False) -> list[Violation]:
        found: list[Violation] = []
        rows = self.rows()
        subs = {s.id: s for s in self.subscribers()}
        by_mid = {r.message_id: r for r in rows}
        on_empty = {s.email: s.on_empty for s in subs.values()}
        by_key = {
            (subs[r.subscriber_id].email, r.period_key): r for r in rows if r.subscriber_id in subs
        }
        digests: list[tuple[Received, Any]] = []
        per_mid: Counter[str] = Counter()
        for rec in self.handler.log:
            row = by_mid.get(rec.message_id.strip("<>")) or by_mid.get(rec.message_id)
            if row is None:
                continue  # a confirmation message
            digests.append((rec, row))
            per_mid[rec.message_id] += 1
        # 1. one digest per due period (or a row deferred/failed/ambiguous with its reason)
        for (address, key), when in self.expected.items():
            row = by_key.get((address, key))
            if row is None:
                found.append(Violation(1, f"{address} {key} (due {when}): no outbox row"))
                continue
            if row.status in ("deferred", "failed", "ambiguous"):
                if not (row.last_error or row.server_reply):
                    found.append(Violation(1, f"{address} {key}: {row.status} without a reason"))
            elif row.status == "cancelled":
                if not self.status_changes.get(address):
                    found.append(Violation(1, f"{address} {key}: cancelled, reader never left"))
            elif row.status == "sent":
                if per_mid.get(_mid(row.message_id), 0) != 1:
                    found.append(
                        Violation(
                            1,
                            f"{address} {key}: sent, server got "
                            f"{per_mid.get(_mid(row.message_id), 0)} copies",
                        )
                    )
            elif row.status in ("pending", "claimed", "sending") and final:
                found.append(Violation(8, f"{address} {key}: still {row.status} after the drain"))
            elif row.status == "skipped" and on_empty.get(address) != "skip":
                found.append(Violation(1, f"{address} {key}: skipped (on_empty = send)"))
        for (address, key), row in by_key.items():
            if (address, key) not in self.expected and row.status != "cancelled":
                found.append(Violation(1, f"{address} {key}: a row ({row.status}) never due"))
        self.checked["due periods"] = len(self.expected)
        self.checked["digests at the server"] = len(digests)
        for mid, n in per_mid.items():
            if n > 1:
                found.append(Violation(1, f"{mid} reached the server {n} times"))
        # 2. ambiguous only after a drop after the final dot (by the server, or the sender
        # killed there)
        dropped = {_mid(rec.message_id) for rec in self.handler.log if rec.dropped}
        self.checked["ambiguous rows"] = sum(1 for r in rows if r.status == "ambiguous")
        self.checked["unsubscribes"] = sum(
            1
            for changes in self.status_changes.values()
            for _, st in changes
            if st == "unsubscribed"
        )
        self.checked["sign-ups confirmed"] = len(self.confirmed)
        for r in rows:
            if r.status != "ambiguous":
                continue
            if r.message_id not in dropped and r.id not in self.in_flight_at_stop:
                found.append(Violation(2, f"row {r.id} ambiguous without a drop ({r.last_error})"))
        # 3. no paper twice to one reader, across versions and sources
        papers: dict[str, Counter[str]] = defaultdict(Counter)
        for rec, _row in digests:
            if rec.papers is None:
                rec.papers = frozenset(_papers_in(rec.data))
            for pid in rec.papers:
                for a in rec.rcpt:
                    papers[a][pid] += 1
        self.checked["papers received"] = sum(sum(c.values()) for c in papers.values())
        for a, counts in papers.items():
            twice = [p for p, n in counts.items() if n > 1]
            if twice:
                found.append(Violation(3, f"{a} got {', '.join(sorted(twice)[:5])} more than once"))
        # 4. nothing to an unsubscribed or unconfirmed address after the change
        for rec, _row in digests:
            for a in rec.rcpt:
                state = _state_at(self.status_changes.get(a, []), rec.real)
                if state == "unsubscribed":
                    found.append(
                        Violation(4, f"digest {rec.message_id} to {a} after unsubscribing")
                    )
                if a.startswith("new") and (
                    a not in self.confirmed or rec.real < self.confirmed[a]
                ):
                    found.append(Violation(4, f"digest {rec.message_id} to unconfirmed {a}"))
        # 5. every press is in the model the next digest is planned with
        found += self._check_presses(subs, rows)
        # 6. headers within 998 octets, messages parse without defects
        for rec in self.handler.log:
            if rec.problems is None:
                rec.problems = _check_message(rec)
            found += rec.problems
        # 7. memory
        for kind, mb in self.max_rss.items():
            if mb > MEMORY_BOUND_MB:
                found.append(Violation(7, f"{kind} RSS {mb:.0f} MB > {MEMORY_BOUND_MB} MB"))
        return found

    def _check_presses(self, subs: dict[int, Any], rows: list[Any]) -> list[Violation]:
        found: list[Violation] = []
        latest: dict[tuple[str, str], tuple[str, datetime]] = {}
        for address, paper, sig, when in self.presses:
            latest[(address, paper)] = (sig, when)
        ids = {s.email: s.id for s in subs.values()}
        f = FEEDBACK.c
        with self.engine.connect() as conn:
            recorded = {
                (r.subscriber_id, r.paper_id): r.signal
                for r in conn.execute(select(f.subscriber_id, f.paper_id, f.signal))
            }
        self.checked["feedback presses"] = len(latest)
        for (address, paper), (sig, when) in latest.items():
            rid = ids.get(address)
            if rid is None:
                continue
            if recorded.get((rid, paper)) != sig:
                found.append(Violation(5, f"{address} pressed {sig} on {paper}: not recorded"))
                continue
            liked = [p for (i, p), s in recorded.items() if i == rid and s == "more"]
            disliked = [p for (i, p), s in recorded.items() if i == rid and s == "less"]
            model = profile_with_feedback(Profile(), liked, disliked)
            if paper not in (model.like if sig == "more" else model.dislike):
                found.append(Violation(5, f"{address}: {paper} ({sig}) is not in the model"))
            later = [r for r in rows if r.subscriber_id == rid and r.created_at > when]
            for r in later:
                if r.period_key and sig == "less" and paper in self._items_of(r.id):
                    found.append(Violation(5, f"{address}: {paper} (less) in a later digest"))
        return found

    def _items_of(self, delivery_id: int) -> set[str]:
        i = DELIVERY_ITEMS.c
        with self.engine.connect() as conn:
            return {
                r.paper_id
                for r in conn.execute(select(i.paper_id).where(i.delivery_id == delivery_id))
            }

    # -- the run ---------------------------------------------------------------------------
    def run(self) -> Result:
        began = time.monotonic()
        end = self.profile.start + timedelta(days=self.profile.days)
        steps = step_instants(self.readers, self.profile.start, end)
        kinds = [k for k in FAULT_KINDS if self.db == "postgresql" or k not in PG_ONLY]
        if self.db == "sqlite" and tmpfs_available():
            kinds.append(MAILDIR_FULL)
        busy: Counter[datetime] = Counter()
        for r in self.readers:
            schedule = reader_schedule(r.frequency, r.send_at, r.timezone)
            busy.update(p.due_at for p in due_periods(schedule, self.profile.start, end))
        self.schedule = fault_schedule(steps, kinds, self.seed, self.profile.days, busy)
        # Greylisting that lasts until the faults stop, so the drain has deferred rows to
        # send (invariant 8).
        self.schedule.append(
            Fault(
                steps[int(len(steps) * 0.9)].isoformat(),
                "smtp_451",
                {"seed": self.seed, "until_end": True},
            )
        )
        self.schedule.sort(key=lambda f: (f.at, f.kind))
        if self.db != "postgresql":
            self.left_out += [f"{k} (PostgreSQL profile only)" for k in sorted(PG_ONLY)]
        if MAILDIR_FULL not in kinds:
            self.left_out.append(self._tmpfs_note())
        by_step: dict[str, list[Fault]] = defaultdict(list)
        for fault in self.schedule:
            by_step[fault.at].append(fault)
        self.say(
            f"soak {self.profile.name}/{self.db} seed {self.seed}: {len(self.readers)} readers, "
            f"{len(steps)} steps over {self.profile.days} days, {len(self.schedule)} faults; "
            f"in {self.dir}"
        )
        self.progress.start("soak", f"soak {self.profile.name}/{self.db}", len(steps))
        self.start()
        try:
            self.settle()
            current_day = self.now.date()
            self._open_day()
            carried: list[Fault] = []
            for t in steps:
                self.progress.advance("soak")
                if t <= self.now:  # passed by a nudge or the clock jump: faults carry over
                    carried += by_step.pop(t.isoformat(), [])
                    continue
                if t.date() != current_day:
                    self._close_day()
                    current_day = t.date()
                    self.day.day = current_day.isoformat()
                    self._open_day()
                self.set_clock(t)
                self.end_faults()
                self.day.steps += 1
                faults, carried = carried + by_step.get(t.isoformat(), []), []
                for fault in faults:
                    if fault.kind in DURING_STEP:
                        self.inject(fault)
                self.settle()
                for fault in faults:
                    if fault.kind not in DURING_STEP:
                        self.inject(fault)
                        if fault.kind == "clock_jump_2h":
                            self.settle()
                self.end_faults()
                if self.rng.random() < 0.3:
                    self.act()
                    self.settle()
            self._close_day()
            self.day.day = "drain"
            self._open_day()
            drain_began, drain_sim = self._drain()
            self._close_day(final=True, drain=(drain_began, drain_sim))
        finally:
            self.close()
        sent = self._sent_count()
        self.progress.finish(
            "soak",
            f"{sent} digests sent, {sum(self.faults_done.values())} faults, "
            f"invariants {'held' if not self.violations else 'BROKEN'}",
        )
        return Result(
            profile=self.profile.name,
            db=self.db,
            seed=self.seed,
            days=self.profile.days,
            readers=len(self.readers),
            faults=self.faults_done,
            invariants_held=not self.violations,
            violations=_unique(self.violations),
            digests_sent=sent,
            messages_received=len(self.handler.log),
            seconds=round(time.monotonic() - began, 1),
            drain_seconds=round(drain_began, 1),
            drain_simulated_minutes=drain_sim,
            max_rss_mb={k: round(v, 1) for k, v in self.max_rss.items()},
            ledger=self.ledger,
            checked=dict(self.checked),
            left_out=self.left_out,
            directory=str(self.dir),
        )

    def _sent_count(self) -> int:
        with self.engine.connect() as conn:
            return len(
                list(conn.execute(select(DELIVERIES.c.id).where(DELIVERIES.c.status == "sent")))
            )

    def _open_day(self) -> None:
        day = self.day.day
        self.progress.start("day", "drain" if day == "drain" else f"day {day}")

    def _close_day(self, *, final: bool = False, drain: tuple[float, float] | None = None) -> None:
        self.day.digests_received = len(self.handler.log)
        self.day.outbox = dict(Counter(r.status for r in self.rows()))
        problems = self.check(final=final)
        self.day.violations = [f"{v.invariant}: {v.what}" for v in problems]
        self.violations += problems
        # what the per-day stderr line said, as the day's step note
        d = self.day
        faults = ", ".join(f[11:16] + f[f.index(" ") :] for f in d.faults)  # HH:MM kind
        note = (
            [f"{drain[0]:.0f} s, {drain[1]:.0f} simulated minutes"]
            if drain
            else [
                f"{d.steps} steps",
                f"faults {len(d.faults)}" + (f" ({faults})" if faults else ""),
            ]
        )
        note += [f"{d.nudges} nudges"] if d.nudges else []
        note += [f"{d.unsettled} unsettled"] if d.unsettled else []
        note += [f"{d.digests_received} digests received so far", f"outbox {d.outbox}"]
        self.progress.finish("day", ", ".join(note) + f", {len(problems)} violations")
        self.ledger.append(self.day)
        self.day = DayLedger((self.now + timedelta(minutes=1)).date().isoformat())

    def _drain(self) -> tuple[float, float]:
        """Faults off; advance the clock 5 minutes at a time until no row is open."""
        self.clear_faults()
        began, start = time.monotonic(), self.now
        while True:
            rows = self.rows()
            open_ = [r for r in rows if r.status in ("pending", "claimed", "sending", "deferred")]
            if not open_:
                break
            if self.now - start > DRAIN_SIMULATED or time.monotonic() - began > DRAIN_REAL_SECONDS:
                self.violations.append(
                    Violation(
                        8,
                        f"{len(open_)} rows still open after {self.now - start} simulated, "
                        f"{time.monotonic() - began:.0f} s",
                    )
                )
                break
            self.set_clock(self.now + timedelta(minutes=5))
            self.settle()
        self.day.steps += 0
        return time.monotonic() - began, (self.now - start).total_seconds() / 60

    # -- Maildir on a full disk (tmpfs) ----------------------------------------------------
    def _maildir_full(self) -> None:
        """Mount a tiny tmpfs, fill it, reload the daemon onto Maildir delivery there for
        two simulated hours (digests due meanwhile are deferred: ENOSPC is transient)."""
        mnt = self.maildir_mount
        mnt.mkdir(exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], check=True)
        for sub in ("tmp", "new", "cur"):
            (mnt / sub).mkdir()
        with contextlib.suppress(OSError), open(mnt / "filler", "wb") as f:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        self.maildir_mode = True
        self.maildir_until = self.now + timedelta(hours=2)
        self.maildir_mark = len(self.daemon.log_text())
        self._reload("config reloaded")

    def _maildir_freed(self) -> None:
        """Free the disk: the deferred digests go into the Maildir; then count what it
        holds as received (with the SMTP server's record) and go back to SMTP."""
        mnt = self.maildir_mount
        (mnt / "filler").unlink()
        began = self.now
        while self.now - began < timedelta(minutes=70):  # the longest backoff is an hour
            if not any(r.status == "deferred" for r in self.rows()):
                break
            self.set_clock(self.now + timedelta(minutes=5))
            self.settle()
        self.maildir_mode = False
        self._reload("config reloaded")
        self.settle()
        offset = time.monotonic() - time.time()
        for path in sorted((mnt / "new").iterdir()):
            data = path.read_bytes()
            msg = email.message_from_bytes(data, policy=email.policy.default)
            with self.handler.lock:
                self.handler.log.append(
                    Received(
                        path.stat().st_mtime + offset,
                        self.now.isoformat(),
                        (str(msg["To"].addresses[0].addr_spec).lower(),),
                        data,
                        _message_id(data),
                    )
                )
        self.checked["maildir messages"] = len(list((mnt / "new").iterdir()))
        subprocess.run(["umount", str(mnt)], check=True)
        self.maildir_until = None

    def _reload(self, needle: str) -> None:
        self.write_config()
        mark = len(self.daemon.log_text())
        self.daemon.signal(signal.SIGHUP)
        self._wait_log(self.daemon, needle, mark)

    def _tmpfs_note(self) -> str:
        return "Maildir disk-full (needs root and `mount -t tmpfs`; the embedded runner only)"


def tmpfs_available() -> bool:
    """Root, and `mount -t tmpfs` works here (probed on a scratch directory)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    probe = Path(tempfile.mkdtemp(prefix="soak-tmpfs-"))
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe)],
            capture_output=True,
            check=False,
        )
        if done.returncode:
            return False
        subprocess.run(["umount", str(probe)], capture_output=True, check=False)
        return True
    finally:
        with contextlib.suppress(OSError):
            probe.rmdir()


def _mid(message_id: str) -> str:
    return message_id if message_id.startswith("<") else f"<{message_id}>"


def _pid_of(holder: str | None) -> int | None:
    if not holder:
        return None
    parts = holder.split(":")
    try:
        return int(parts[1])
    except (IndexError, ValueError):
        return None


def _state_at(changes: list[tuple[float, str]], real: float) -> str:
    state = "active"
    for when, new in changes:
        if when <= real:
            state = new
    return state


_ARXIV = re.compile(r"arxiv\.org/abs/(\d{4}\.\d{4,5})(?:v\d+)?")


def _papers_in(data: bytes) -> set[str]:
    msg = email.message_from_bytes(data, policy=email.policy.default)
    part = msg.get_body(preferencelist=("plain",))
    body = part.get_content() if part is not None else ""
    return set(_ARXIV.findall(body))


def _check_message(rec: Received) -> list[Violation]:
    found = []
    head = rec.data.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    for line in head.split(b"\n"):
        if len(line.rstrip(b"\r")) > 998:
            found.append(Violation(6, f"{rec.message_id}: a header line of {len(line)} octets"))
    msg = email.message_from_bytes(rec.data, policy=email.policy.default)
    for part in msg.walk():
        if part.defects:
            found.append(Violation(6, f"{rec.message_id}: defects {part.defects}"))
        for _name, value in part.items():
            if getattr(value, "defects", None):
                found.append(Violation(6, f"{rec.message_id}: header defects {value.defects}"))
    return found


def _unique(violations: list[Violation]) -> list[Violation]:
    seen: set[tuple[int, str]] = set()
    out = []
    for v in violations:
        if (v.invariant, v.what) not in seen:
            seen.add((v.invariant, v.what))
            out.append(v)
    return out


# -- entry points -----------------------------------------------------------------------------
@contextlib.contextmanager
def pg_schema() -> Iterator[tuple[str, str]]:
    """A fresh schema on the test server, dropped afterwards; its URL names the soak's
    ``application_name`` (pg_terminate_backend cuts only the soak's own connections)."""
    schema = f"soak_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_BASE, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{PG_BASE}?options=-csearch_path%3D{schema}&application_name={schema}", schema
    finally:
        with admin.connect() as conn:
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = :app"
                ),
                {"app": schema},
            )
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def write_report(result: Result, soak: Soak, directory: Path) -> Path:
    """The seed, the fault schedule and the per-day ledger, to replay with ``--seed``."""
    directory.mkdir(parents=True, exist_ok=True)
    report = {
        "replay": f"python bench/soak.py --profile {result.profile} --db {result.db} "
        f"--seed {result.seed} --days {result.days}",
        "seed": result.seed,
        "fault_schedule": [asdict(f) for f in getattr(soak, "schedule", [])],
        **result.summary(),
    }
    path = directory / "soak-report.json"
    path.write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
    return path


def run_soak(
    *,
    profile: str = "short",
    db: str = "sqlite",
    seed: int = 1,
    days: int | None = None,
    directory: Path | None = None,
    log: Any = None,
    progress: Progress | None = None,
) -> tuple[Result, Path]:
    """Run one soak; returns its result and the report file (written always).

    Progress goes to ``progress``, else to stderr (bars on a terminal, plain lines
    otherwise), closed before this returns."""
    base = PROFILES[profile]
    if days is not None:
        base = SoakProfile(base.name, days, base.readers, base.start, base.papers_per_day)
    work = directory or Path(tempfile.mkdtemp(prefix=f"soak-{profile}-{db}-"))
    with contextlib.nullcontext(progress) if progress else progress_for(sys.stderr) as shown:
        if db == "postgresql":
            with pg_schema() as (url, app_name):
                soak = Soak(
                    profile=base,
                    db=db,
                    seed=seed,
                    directory=work,
                    pg_url=url,
                    log=log,
                    progress=shown,
                )
                soak.app_name = app_name
                result = soak.run()
        else:
            soak = Soak(profile=base, db=db, seed=seed, directory=work, log=log, progress=shown)
            result = soak.run()
    return result, write_report(result, soak, work)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", choices=sorted(PROFILES), default="short")
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--days", type=int, default=None, help="override the profile's days")
    parser.add_argument(
        "--dir", type=Path, default=None, help="work directory (default: a temp dir)"
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    result, report = run_soak(
        profile=args.profile, db=args.db, seed=args.seed, days=args.days, directory=args.dir
    )
    if not result.invariants_held:
        print(f"replay: {json.loads(report.read_text(encoding='utf-8'))['replay']}")
    if args.json:
        print(json.dumps(result.summary(), default=str))  # one line, the last
    else:
        print(
            f"{result.profile}/{result.db} seed {result.seed}: {result.days} days, "
            f"{result.readers} readers, faults {sum(result.faults.values())} "
            f"({len(result.faults)} kinds), digests sent {result.digests_sent}, "
            f"{result.seconds:.0f} s; invariants {'held' if result.invariants_held else 'BROKEN'}"
        )
        print(f"  max RSS (MB): {result.max_rss_mb}; checked: {result.checked}")
        print(
            f"  drain: {result.drain_seconds:.1f} s, {result.drain_simulated_minutes:.0f} "
            f"simulated minutes; left out: {'; '.join(result.left_out)}"
        )
        for v in result.violations[:40]:
            print(f"  invariant {v.invariant}: {v.what}")
    print(f"report: {report}", file=sys.stderr)
    return 0 if result.invariants_held else 1


if __name__ == "__main__":
    raise SystemExit(main())
