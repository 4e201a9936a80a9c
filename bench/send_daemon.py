"""The daemon's own delivery path, timed: what ``bench/send.py --daemon N`` adds.

``bench/send.py`` times render, build and send on prebuilt digests. The daemon
does more per digest, in ``pipeline/cycle/deliver.py``: it claims outbox rows,
loads each row with its papers from the database, signs the reader's links
(two per paper and the unsubscribe link), renders, builds, marks the row
"sending", sends through ``SmtpMailer`` and marks it "sent". This runs exactly
that code (``Deliverer.run``) over N planned rows in a fresh SQLite database
(or, with ``database`` a PostgreSQL URL, a fresh schema there, dropped afterwards),
with the same sink, pool and connection reuse as the sending rows of send.py.
"""

from __future__ import annotations

import asyncio
import os
import random
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select

from pipeline.app import App
from pipeline.config import Config, load_config
from pipeline.cycle.compose import make_composer
from pipeline.cycle.deliver import Deliverer, DeliverReport, deliver_settings
from pipeline.cycle.plan import outbox_key
from pipeline.domain import Paper
from pipeline.mail import make_message_id
from pipeline.progress import Progress
from pipeline.store import Store
from pipeline.store.planning import PlannedItem
from pipeline.store.rows import SubscriberRow

WHEN = datetime(2025, 11, 24, 7, 0, tzinfo=UTC)
SECRET_ENV = "PAPERPOST_BENCH_SECRET"

CONFIG = """
[database]
url = "{database_url}"

[mail]
from = "Paperpost <digest@lab.example>"
transport = "smtp"
list_name = "Paperpost"
unsubscribe_mailto = "unsubscribe@lab.example"
concurrency = {pool}
render_processes = {render_processes}

[mail.smtp]
host = "127.0.0.1"
port = {port}
security = "none"
pool_size = {pool}
max_per_connection = 10000

[web]
base_url = "https://digest.lab.example"
secret_env = "{secret_env}"

[render]
preview_dir = "{directory}/previews"
"""

SUBSCRIBER = """
[[subscribers]]
email = "reader{n}@lab.example"
name = "Reader {n}"
send_at = "00:00"
[subscribers.interests]
categories = ["cs.LG"]
"""

Sink = Callable[[str], AbstractContextManager[tuple[int, int]]]


def run_daemon_path(
    kind: str,
    count: int,
    pool: int,
    papers: list[Paper],
    sink: Sink,
    process_cpu: Callable[[int], float],
    database: str = "sqlite",
    render_processes: int = 0,
    progress: Progress | None = None,
) -> tuple[int, float, float, float, float]:
    """Plan ``count`` digests of 20 papers, then time ``Deliverer.run`` sending them.

    ``database``: "sqlite" (a file in a temporary directory) or a PostgreSQL URL.
    ``render_processes``: ``[mail] render_processes`` (0: compose in this process; else
    worker processes compose, started within the timed run as in a real one).
    ``progress``: told of the planned rows ("plan") and of each settled digest ("deliver",
    as ``run --once`` tells it).
    Returns (sent, wall seconds, this process's CPU seconds, the sink's CPU seconds, the
    compose workers' CPU seconds).
    """
    show = progress or Progress()
    workers = f", {render_processes} render processes" if render_processes else ""
    label = f"daemon path ({kind}{workers})"
    with (
        tempfile.TemporaryDirectory() as tmp,
        fresh_database(database, Path(tmp)) as url,
        sink(kind) as (port, pid),
    ):
        directory = Path(tmp)
        path = directory / "paperpost.toml"
        body = CONFIG.format(
            database_url=url,
            directory=directory,
            port=port,
            pool=pool,
            secret_env=SECRET_ENV,
            render_processes=render_processes,
        )
        path.write_text(body + "".join(SUBSCRIBER.format(n=n) for n in range(count)))
        config = load_config(path, env={SECRET_ENV: "bench-secret-0123456789abcdef"})
        store = Store.open(config.database_url, auto_upgrade=True)
        try:
            show.start("plan", f"{label}: plan", count)
            _plan(store, config, count, papers, show)
            show.finish("plan", f"{count} rows")
            deliverer = Deliverer(
                store,
                deliver_settings(config),
                App(config, store=store).mailer(),
                make_composer(config, store),
                clock=lambda: WHEN,
                holder="bench",
                on_settled=lambda _outcome: show.advance("deliver"),
            )
            show.start("deliver", f"{label}: deliver", count)
            sink_cpu, wall, cpu = process_cpu(pid), time.perf_counter(), time.process_time()
            children = _children_cpu()
            report = asyncio.run(_run(deliverer))  # joins the compose workers, if any
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            workers_cpu = _children_cpu() - children
            sink_cpu = process_cpu(pid) - sink_cpu
            show.finish("deliver", f"{report.sent} sent, {wall:.1f} s")
        finally:
            store.close()
    assert report.sent == count and report.aborted is None, report
    return report.sent, wall, cpu, sink_cpu, workers_cpu


def _children_cpu() -> float:
    """CPU seconds of this process's finished children (the joined compose workers; the
    sink is still running, so not counted)."""
    times = os.times()
    return times.children_user + times.children_system


@contextmanager
def fresh_database(database: str, directory: Path) -> Iterator[str]:
    """The URL of an empty database: a SQLite file, or a fresh PostgreSQL schema."""
    if database == "sqlite":
        yield f"sqlite:///{directory}/paperpost.db"
        return
    from tests.pgschema import fresh_schema  # the repository root is on sys.path

    with fresh_schema(database, prefix="bench") as url:
        yield url


async def _run(deliverer: Deliverer) -> DeliverReport:
    try:
        return await deliverer.run()
    finally:
        await deliverer.mailer.aclose()
        deliverer.composer.close()


def _plan(
    store: Store, config: Config, count: int, papers: list[Paper], progress: Progress
) -> None:
    App(config, store=store).sync(now=WHEN)
    store.save_papers(papers, now=WHEN)
    with store.read() as s:
        rows = s.execute(select(SubscriberRow.email, SubscriberRow.id)).tuples().all()
    ids = dict(rows)
    rnd = random.Random(11)
    for n in range(count):
        subscriber = ids[f"reader{n}@lab.example"]
        items = [
            PlannedItem(p.id, rnd.random(), f"matched cat:{p.categories[0]}")
            for p in rnd.sample(papers, 20)
        ]
        store.plan_delivery(
            subscriber_id=subscriber,
            period_key="2025-11-24",
            window_start=WHEN - timedelta(days=1),
            window_end=WHEN,
            message_id=make_message_id(
                outbox_key("bench", subscriber, "2025-11-24"), "lab.example"
            ),
            items=items,
            now=WHEN,
        )
        progress.advance("plan")
