"""Planning's outbox writes, timed: the bulk write against the old per-row path.

Two measurements, each a median over ``--runs`` fresh databases (a SQLite file in a
temporary directory; a fresh PostgreSQL schema, dropped afterwards):

``writes`` (the default)
    N readers (rows written straight into ``subscribers``) get one digest of ``--items``
    papers each (drawn from a pool of 600 ids), written by

    - ``old``: the single-row ``plan_delivery`` as it was before the bulk write (an ORM
      session, two SELECTs, a SAVEPOINT, ~41 ORM objects and a COMMIT per reader), copied
      verbatim below from git history (``old_plan_delivery``);
    - ``bulk``: ``Store.plan_deliveries`` over blocks of ``--block`` readers, one
      transaction per block.

    With ``--sweep`` it also times one ``plan_deliveries`` call per block size on SQLite
    (how long a planning block holds SQLite's write lock).

``app`` (``--app N``)
    ``App.plan`` for N readers imported with ``Store.import_subscribers`` (four queries,
    three categories, four time zones, as tests/e2e/test_healthz_under_load.py), with real
    matching over the sample listings of config/samples/ ingested by ``App.ingest``.
    ``--paths old`` swaps the store's bulk write for a loop over ``old_plan_delivery``.

CPU is this process's (``time.process_time``: Python, SQLAlchemy, the driver, SQLite
itself); PostgreSQL's server CPU is not in it. Run::

    .venv/bin/python bench/plan_writes.py --readers 2000 --runs 3
    .venv/bin/python bench/plan_writes.py --app 10000 --databases sqlite --json

With ``--json`` the last line printed is one JSON object holding every result.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import Table, insert, select, text  # noqa: E402
from sqlalchemy.exc import IntegrityError  # noqa: E402

from pipeline.store import PlannedDelivery, PlannedItem, Store  # noqa: E402
from pipeline.store.rows import (  # noqa: E402
    DeliveryItemRow,
    DeliveryRow,
    SentItemRow,
    SubscriberRow,
)
from tests.pgschema import fresh_schema  # noqa: E402

PG_BASE = os.environ.get("PAPERPOST_BENCH_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
# A Monday, noon UTC (as tests/integration/test_cycle.py).
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
SECRET_ENV = "PAPERPOST_BENCH_SECRET"
SAMPLES = ROOT / "config" / "samples"
REASON = "matches your query: ti:agent* · cs.LG"  # a typical reason line's length


# -- the old single-row path, verbatim from git (pipeline/store/outbox.py at 50d6de0) -----------
def old_plan_delivery(
    store: Store,
    *,
    subscriber_id: int,
    period_key: str,
    window_start: datetime,
    window_end: datetime,
    message_id: str,
    items: Sequence[PlannedItem],
    now: datetime,
    skip_if_empty: bool = True,
    subscriber_version: int = 0,
) -> int | None:
    with store.write() as s:
        exists = s.scalar(
            select(DeliveryRow.id).where(
                DeliveryRow.subscriber_id == subscriber_id,
                DeliveryRow.period_key == period_key,
            )
        )
        if exists is not None:
            return None
        taken = set(
            s.scalars(
                select(SentItemRow.paper_id).where(
                    SentItemRow.subscriber_id == subscriber_id,
                    SentItemRow.paper_id.in_([i.paper_id for i in items]),
                )
            )
        )
        fresh = [i for i in items if i.paper_id not in taken]
        row = DeliveryRow(
            subscriber_id=subscriber_id,
            period_key=period_key,
            status="skipped" if skip_if_empty and not fresh else "pending",
            attempts=0,
            next_attempt_at=now,
            window_start=window_start,
            window_end=window_end,
            message_id=message_id,
            created_at=now,
            item_count=len(fresh),
            subscriber_version=subscriber_version,
        )
        try:
            with s.begin_nested():
                s.add(row)
                s.flush()
        except IntegrityError:
            return None
        for rank, item in enumerate(fresh):
            s.add(
                DeliveryItemRow(
                    delivery_id=row.id,
                    rank=rank,
                    paper_id=item.paper_id,
                    score=float(item.score),
                    reason=item.reason,
                    trending=int(item.trending),
                )
            )
            s.add(
                SentItemRow(subscriber_id=subscriber_id, paper_id=item.paper_id, delivery_id=row.id)
            )
        return row.id


def old_plan_deliveries(
    store: Store, plans: Sequence[PlannedDelivery], *, now: datetime
) -> list[int | None]:
    """The bulk write's signature over the old path: one transaction per reader."""
    return [
        old_plan_delivery(
            store,
            subscriber_id=p.subscriber_id,
            period_key=p.period_key,
            window_start=p.window_start,
            window_end=p.window_end,
            message_id=p.message_id,
            items=p.items,
            now=now,
            skip_if_empty=p.skip_if_empty,
            subscriber_version=p.subscriber_version,
        )
        for p in plans
    ]


# -- databases -----------------------------------------------------------------------------------
@contextmanager
def database(kind: str) -> Iterator[str]:
    """The URL of an empty database: a SQLite file, or a fresh PostgreSQL schema."""
    if kind == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            yield f"sqlite:///{tmp}/paperpost.db"
        return
    with fresh_schema(PG_BASE, prefix="bench") as url:
        yield url


def add_readers(store: Store, n: int) -> list[int]:
    table = cast("Table", SubscriberRow.__table__)
    with store.begin() as conn:
        conn.execute(
            insert(table),
            [
                {"email": f"r{i}@lab.example", "status": "active", "created_at": NOW}
                for i in range(n)
            ],
        )
        return list(conn.scalars(select(table.c.id).order_by(table.c.id)))


def make_plans(readers: Sequence[int], items: int) -> list[PlannedDelivery]:
    rng = random.Random(11)
    pool = [f"2611.{n:05d}" for n in range(600)]
    return [
        PlannedDelivery(
            subscriber_id=sid,
            period_key="2026-11-23",
            window_start=NOW - timedelta(days=1),
            window_end=NOW,
            message_id=f"<bench.{sid}.2026-11-23@lab.example>",
            items=tuple(PlannedItem(p, rng.random(), REASON) for p in rng.sample(pool, items)),
            skip_if_empty=True,
            subscriber_version=1,
        )
        for sid in readers
    ]


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    """(CPU seconds of this process, wall seconds) of ``fn()``."""
    cpu, wall = time.process_time(), time.perf_counter()
    fn()
    return time.process_time() - cpu, time.perf_counter() - wall


# -- writes --------------------------------------------------------------------------------------
def run_writes(kind: str, path: str, n: int, items: int, block: int) -> dict[str, float]:
    with database(kind) as url:
        store = Store.open(url, auto_upgrade=True)
        try:
            plans = make_plans(add_readers(store, n), items)

            def write() -> None:
                for i in range(0, len(plans), block):
                    chunk = plans[i : i + block]
                    if path == "old":
                        ids = old_plan_deliveries(store, chunk, now=NOW)
                    else:
                        ids = store.plan_deliveries(chunk, now=NOW)
                    assert None not in ids

            cpu, wall = timed(write)
            assert store.outbox_counts() == {"pending": n}
        finally:
            store.close()
    return {"cpu_s": cpu, "wall_s": wall}


def run_sweep(kind: str, sizes: Sequence[int], items: int) -> dict[int, dict[str, float]]:
    """Wall (the lock hold on SQLite) and CPU of one ``plan_deliveries`` call per block
    size: the median over a few blocks written one after another into one database."""
    out: dict[int, dict[str, float]] = {}
    for size in sizes:
        calls = 5
        with database(kind) as url:
            store = Store.open(url, auto_upgrade=True)
            try:
                plans = make_plans(add_readers(store, size * calls), items)
                walls, cpus = [], []
                for i in range(calls):
                    chunk = plans[i * size : (i + 1) * size]
                    cpu, wall = timed(lambda c=chunk, s=store: s.plan_deliveries(c, now=NOW))
                    walls.append(wall)
                    cpus.append(cpu)
            finally:
                store.close()
        out[size] = {"wall_s": statistics.median(walls), "cpu_s": statistics.median(cpus)}
    return out


# -- App.plan with real matching -----------------------------------------------------------------
CONFIG = """
[database]
url = "{url}"

[mail]
from = "Paperpost bench <digest@lab.example>"
transport = "maildir"
list_name = "Paperpost bench"
unsubscribe_mailto = "unsubscribe@lab.example"

[mail.maildir]
path = "{tmp}/maildir"

[web]
base_url = "https://digest.lab.example"
secret_env = "{secret_env}"

[render]
preview_dir = "{tmp}/previews"
"""
SOURCES = [
    ("daily-papers-001", "feed", "daily-papers-001.rss"),
    ("daily-papers-002", "feed", "daily-papers-002.rss"),
    ("daily-papers-003", "feed", "daily-papers-003.rss"),
    ("daily-papers-004", "feed", "daily-papers-004.rss"),
    ("arxiv-api-testing", "arxiv-api", "arxiv-api-search-testing.xml"),
    ("hf-daily", "hf-daily", "hf-daily-2026-07-31.json"),
]
QUERIES = (
    'abs:RLHF OR ti:"preference optimization" OR abs:"reward model"',
    "abs:(quantization OR pruning) OR ti:efficient",
    'ti:agent* OR abs:"tool use"',
    "ti:diffusion OR abs:language",
)
CATEGORIES = ("cs.LG", "cs.CL", "cs.AI")
TIMEZONES = ("UTC", "Europe/London", "Asia/Tokyo", "America/New_York")


def write_readers(path: Path, n: int) -> Path:
    """``n`` readers as JSON Lines for ``subscribers import``: four queries, three
    categories and four time zones in turn, every one due at midnight."""
    with path.open("w", encoding="utf-8") as out:
        for i in range(n):
            record = {
                "email": f"reader{i}@lab.example",
                "timezone": TIMEZONES[i % len(TIMEZONES)],
                "send_at": "00:00",
                "interests": {
                    "query": QUERIES[i % len(QUERIES)],
                    "categories": [CATEGORIES[i % len(CATEGORIES)]],
                },
            }
            out.write(json.dumps(record) + "\n")
    return path


def run_app(kind: str, path: str, n: int) -> dict[str, float]:
    from pipeline.app import App
    from pipeline.config import load_config

    with database(kind) as url, tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        sources = "".join(
            f'\n[[sources]]\nname = "{name}"\nkind = "{k}"\nurl = "{SAMPLES / file}"\n'
            for name, k, file in SOURCES
        )
        config_path = directory / "paperpost.toml"
        body = CONFIG.format(url=url, tmp=directory, secret_env=SECRET_ENV)
        config_path.write_text(body + sources, encoding="utf-8")
        readers = write_readers(directory / "readers.jsonl", n)
        config = load_config(config_path, env={SECRET_ENV: "bench-secret-0123456789abcdef"})
        store = Store.open(config.database_url, auto_upgrade=True)
        try:
            app = App(config, store=store, clock=lambda: NOW)
            app.sync(now=NOW - timedelta(hours=1))
            outcomes = asyncio.run(app.ingest(now=NOW - timedelta(hours=1)))
            assert all(o.ok for o in outcomes), [o.error for o in outcomes]
            app.import_subscribers(readers, now=NOW - timedelta(hours=1))
            if path == "old":
                store.plan_deliveries = (  # type: ignore[method-assign]
                    lambda plans, *, now: old_plan_deliveries(store, plans, now=now)
                )
            cpu, wall = timed(lambda: app.plan(now=NOW))
            counts = store.outbox_counts()
            papers = store.count_papers()
            with store.read() as s:
                item_rows = s.scalar(select(text("count(*)")).select_from(DeliveryItemRow))
        finally:
            store.close()
    assert sum(counts.values()) == n, counts
    return {
        "cpu_s": cpu,
        "wall_s": wall,
        "papers": float(papers),
        "items_per_reader": (item_rows or 0) / n,
        "pending": float(counts.get("pending", 0)),
    }


# -- report --------------------------------------------------------------------------------------
def medians(results: Sequence[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(r[key] for r in results) for key in results[0]}


def machine() -> dict[str, Any]:
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "commit": commit + ("+dirty" if dirty else ""),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--readers", type=int, default=2000, help="readers (writes mode)")
    parser.add_argument("--items", type=int, default=20, help="papers per digest")
    parser.add_argument("--runs", type=int, default=3, help="fresh databases per median")
    parser.add_argument("--block", type=int, default=1024, help="readers per bulk call")
    parser.add_argument("--databases", default="sqlite,postgres")
    parser.add_argument("--paths", default="old,bulk")
    parser.add_argument("--sweep", default="", help="block sizes to time on SQLite: 256,1024")
    parser.add_argument("--app", type=int, default=0, help="time App.plan for N readers")
    parser.add_argument("--json", action="store_true", help="one JSON object as the last line")
    args = parser.parse_args()
    kinds = [k for k in args.databases.split(",") if k]
    paths = [p for p in args.paths.split(",") if p]
    report: dict[str, Any] = {"machine": machine(), "runs": args.runs}
    print(f"# {report['machine']}")
    if args.app:
        report["app"] = {"readers": args.app, "results": {}}
        for kind in kinds:
            for path in paths:
                r = medians([run_app(kind, path, args.app) for _ in range(args.runs)])
                report["app"]["results"][f"{kind}/{path}"] = r
                print(
                    f"App.plan {kind:8} {path:4} {args.app} readers: "
                    f"CPU {r['cpu_s']:.2f} s ({1000 * r['cpu_s'] / args.app:.3f} ms/reader), "
                    f"wall {r['wall_s']:.2f} s ({1000 * r['wall_s'] / args.app:.3f} ms/reader), "
                    f"{r['items_per_reader']:.1f} items/reader",
                    flush=True,
                )
    else:
        n = args.readers
        report["writes"] = {"readers": n, "items": args.items, "block": args.block}
        report["writes"]["results"] = {}
        for kind in kinds:
            for path in paths:
                r = medians(
                    [run_writes(kind, path, n, args.items, args.block) for _ in range(args.runs)]
                )
                report["writes"]["results"][f"{kind}/{path}"] = r
                print(
                    f"writes {kind:8} {path:4} {n} x {args.items}: "
                    f"CPU {1000 * r['cpu_s'] / n:.3f} ms/reader, "
                    f"wall {1000 * r['wall_s'] / n:.3f} ms/reader",
                    flush=True,
                )
    if args.sweep:
        sizes = [int(s) for s in args.sweep.split(",") if s]
        sweep = run_sweep("sqlite", sizes, args.items)
        report["sqlite_block_sweep"] = {str(k): v for k, v in sweep.items()}
        for size, r in sweep.items():
            print(
                f"sqlite one call of {size} readers: lock held {1000 * r['wall_s']:.0f} ms, "
                f"CPU {1000 * r['cpu_s']:.0f} ms",
                flush=True,
            )
    if args.json:
        print(json.dumps(report))


if __name__ == "__main__":
    main()
