"""A paper whose ingest commits after a reader was planned still reaches that reader's
next digest, exactly once (docs/ingest.md, "Late commits").

The interleaving is forced with events, not sleeps, on real SQLite and real PostgreSQL:
the ingest's papers transaction is held open at its COMMIT (a SQLAlchemy ``commit``
listener) until the plan has read its window; then the ingest commits and the plan
writes its row. Without the ingest fence the row's window would end at the plan's
instant, after the papers' stamp, and they would never be planned for anyone.
"""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import event, text

from pipeline.app import App
from pipeline.config import load_config
from pipeline.store import Store
from pipeline.store.ops import INGEST_FENCE

ADA = """
[[subscribers]]
email = "ada@lab.example"
name = "Ada Lovelace"
timezone = "Europe/London"
send_at = "00:00"
[subscribers.interests]
query = 'abs:RLHF OR ti:"preference optimization" OR abs:"reward model" OR ti:agent*'
"""
DEFERRED = datetime(2026, 11, 22, 23, 0, tzinfo=UTC)  # a runner's job deferred then
WRITTEN = datetime(2026, 11, 23, 0, 29, tzinfo=UTC)  # the ingest run's clock
PLANNED = datetime(2026, 11, 23, 0, 30, tzinfo=UTC)  # the plan: Ada's 23 Nov period
WAIT = 60.0  # seconds an event may take before the test fails (never reached when right)


class Clock:
    def __init__(self, moment: datetime) -> None:
        self.moment = moment

    def __call__(self) -> datetime:
        return self.moment


def hold_papers_commit(store: Store) -> tuple[threading.Event, threading.Event]:
    """(held, release): the first transaction that inserts papers stops at its COMMIT,
    sets ``held`` and waits for ``release`` (its rows written, not yet visible)."""
    held, release = threading.Event(), threading.Event()

    def before_execute(conn: Any, cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO PAPERS "):
            conn.info["papers_inserted"] = True

    def on_commit(conn: Any) -> None:
        if conn.info.pop("papers_inserted", False) and not held.is_set():
            held.set()
            assert release.wait(WAIT), "the plan never read its window"

    event.listen(store.engine, "before_cursor_execute", before_execute)
    event.listen(store.engine, "commit", on_commit)
    return held, release


def signal_window_read(store: Store) -> threading.Event:
    """Set once planning has read the papers of a window (the real store's read)."""
    read = threading.Event()
    real = store.papers_seen_between

    def papers_seen_between(start: datetime, end: datetime) -> list[Any]:
        papers = real(start, end)
        read.set()
        return papers

    store.papers_seen_between = papers_seen_between  # type: ignore[method-assign]
    return read


def rows(store: Store) -> list[tuple[str, datetime, list[str]]]:
    """(period, window end, papers) of every outbox row, oldest period first."""
    with store.engine.connect() as conn:
        found = conn.execute(
            text(
                "SELECT d.period_key, d.window_end, i.paper_id FROM deliveries d "
                "LEFT JOIN delivery_items i ON i.delivery_id = d.id "
                "ORDER BY d.period_key, i.rank"
            )
        ).all()
    out: dict[str, tuple[datetime, list[str]]] = {}
    for period, end, paper in found:
        moment = end if isinstance(end, datetime) else datetime.fromisoformat(end)
        out.setdefault(period, (moment.replace(tzinfo=moment.tzinfo or UTC), []))
        if paper is not None:
            out[period][1].append(paper)
    return [(period, end, papers) for period, (end, papers) in sorted(out.items())]


def first_seen(store: Store) -> dict[str, datetime]:
    """Each stored paper's stamp."""
    papers = store.papers_seen_between(WRITTEN - timedelta(days=30), PLANNED + timedelta(days=30))
    return {p.id: p.first_seen for p in papers if p.first_seen is not None}


def test_a_paper_committed_after_the_plan_read_its_window_reaches_the_next_digest_once(
    write_config, db_url: str
) -> None:
    config = load_config(write_config(db_url=db_url, subscribers=ADA))
    clock = Clock(WRITTEN)
    with App(config, clock=clock) as app:
        app.upgrade_database()
        app.sync(now=WRITTEN - timedelta(hours=2))
        store = app.store
        held, release = hold_papers_commit(store)
        window_read = signal_window_read(store)
        errors: list[BaseException] = []

        def run(work: Any) -> threading.Thread:
            def target() -> None:
                try:
                    work()
                except BaseException as exc:  # reported by the test thread
                    errors.append(exc)
                    held.set()
                    release.set()

            thread = threading.Thread(target=target)
            thread.start()
            return thread

        # A runner's ingest job deferred at 23:00, running at 00:29: its run is recorded
        # as started, then its papers transaction stops at its COMMIT.
        ingest = run(lambda: asyncio.run(app.ingest(now=DEFERRED)))
        assert held.wait(WAIT), "the ingest never reached its commit"
        assert not errors, errors
        # Ada's 23 Nov digest is planned at 00:30, while those papers are uncommitted.
        plan = run(lambda: app.plan(now=PLANNED))
        assert window_read.wait(WAIT), "the plan never read its window"
        release.set()  # now the ingest commits (on SQLite the plan's write waits for it)
        ingest.join(WAIT)
        plan.join(WAIT)
        assert not ingest.is_alive() and not plan.is_alive()
        assert not errors, errors

        late = first_seen(store)
        assert late, "the ingest stored no paper"
        # Stamped after the run's start committed (00:29), not with the ``now`` it was
        # given (23:00): still before the plan's instant, so an unfenced window ending at
        # 00:30 would have closed over them while they were invisible.
        assert set(late.values()) == {WRITTEN}
        [(period, end, papers)] = rows(store)
        assert period == "2026-11-23"
        assert papers == []  # uncommitted when the plan read, and not claimed as covered
        assert end < WRITTEN  # the fence: the window ends before the unfinished run began

        # The next day's digest carries them, and the one after does not repeat them.
        for day in (1, 2):
            clock.moment = PLANNED + timedelta(days=day)
            app.plan(now=clock.moment)
        first, second, third = rows(store)
        assert second[0] == "2026-11-24"
        assert second[2], "the late papers never reached Ada's next digest"
        assert set(second[2]) <= set(late)
        assert third[2] == []
        everything = first[2] + second[2] + third[2]
        assert len(everything) == len(set(everything))  # each paper once


def test_an_unfinished_ingest_run_fences_planning_until_it_finishes_or_lapses(
    write_config, db_url: str
) -> None:
    config = load_config(write_config(db_url=db_url, subscribers=ADA))
    with App(config, clock=Clock(WRITTEN)) as app:
        app.upgrade_database()
        store = app.store
        assert store.ingest_fence(now=PLANNED) == PLANNED  # no run: the window ends now
        run_id = store.start_run("ingest", started=WRITTEN)
        fence = store.ingest_fence(now=PLANNED)
        assert WRITTEN - timedelta(milliseconds=1) < fence < WRITTEN
        # A run that started after the plan's instant does not move its window.
        assert store.ingest_fence(now=WRITTEN - timedelta(minutes=5)) == WRITTEN - timedelta(
            minutes=5
        )
        # A run older than the fence's lifetime is a dead process's: ignored.
        lapsed = WRITTEN + INGEST_FENCE + timedelta(seconds=1)
        assert store.ingest_fence(now=lapsed) == lapsed
        store.finish_run(run_id, finished=PLANNED, summary={})
        assert store.ingest_fence(now=PLANNED) == PLANNED
        [run] = [r for r in store.last_runs() if r.kind == "ingest"]
        assert run.finished_at is not None


def test_a_run_planning_took_for_dead_saves_nothing_and_leaves_its_listings_to_the_next(
    write_config, db_url: str
) -> None:
    config = load_config(write_config(db_url=db_url, subscribers=ADA))
    clock = Clock(WRITTEN)
    with App(config, clock=clock) as app:
        app.upgrade_database()
        store = app.store
        real_start = store.start_run

        def start_then_lapse(kind: str, *, started: datetime) -> int:
            run_id = real_start(kind, started=started)
            # The fetch outlives the fence: a planner closes the run as dead.
            lapsed = started + INGEST_FENCE + timedelta(seconds=1)
            assert store.ingest_fence(now=lapsed) == lapsed
            return run_id

        store.start_run = start_then_lapse  # type: ignore[method-assign]
        outcomes = asyncio.run(app.ingest(now=DEFERRED))
        assert outcomes and not any(o.ok for o in outcomes)
        assert all("left to the next run" in (o.error or "") for o in outcomes)
        assert store.count_papers() == 0
        # Nothing advanced: the next run fetches every listing again.
        assert all(state.last_success is None for state in store.source_states())
        assert store.ingest_fence(now=PLANNED) == PLANNED


def test_a_runner_job_stamps_its_papers_with_its_deferrers_stamp_not_its_own_clock(
    write_config, db_url: str
) -> None:
    config = load_config(write_config(db_url=db_url, subscribers=ADA))
    with App(config, clock=Clock(DEFERRED)) as daemon:
        daemon.upgrade_database()
        run, stamp = daemon.start_ingest_run()  # Dispatcher.defer_ingest, before the defer
        soon = DEFERRED + timedelta(minutes=10)  # a plan while the job waits in the queue
        assert daemon.store.ingest_fence(now=soon) < DEFERRED
    # The worker's clock runs ahead of the daemon's; its job carries (run, stamp).
    with App(config, clock=Clock(PLANNED + timedelta(hours=3))) as worker:
        outcome = asyncio.run(worker.ingest_source("daily-papers-001", now=stamp, run=run))
        assert outcome.ok and outcome.new > 0
        assert set(first_seen(worker.store).values()) == {stamp}
        assert worker.store.ingest_fence(now=PLANNED) == PLANNED  # the job finished its run
        [ingest] = [r for r in worker.store.last_runs() if r.kind == "ingest"]
        assert ingest.started_at == DEFERRED and ingest.finished_at is not None
