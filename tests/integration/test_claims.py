"""Claims in the store, on SQLite and PostgreSQL: only the holder gives its ``claimed``
rows back (never a ``sending`` one), the rows of dead processes of this host come back at
once, and an outcome before DATA (deferred, failed) is recorded from ``claimed``. Also
``process_alive`` against real processes."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import time as clock_time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from pipeline.cycle.deliver import process_alive
from pipeline.domain import Profile, Schedule, Subscriber
from pipeline.store import PlannedItem, Store
from pipeline.store.rows import DeliveryRow
from tests.factories import MONDAY_8AM as NOW

WAIT = 30.0  # seconds: a safety net against hangs, never a timing assertion


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    s = Store.open(db_url, auto_upgrade=True)
    schedule = Schedule("daily", clock_time(8), "UTC")
    readers = [Subscriber(f"r{n}@x.test", None, schedule, Profile()) for n in range(8)]
    s.sync_subscribers(readers, now=NOW)
    yield s
    s.close()


def planned(store: Store, n: int, papers: tuple[str, ...] = ()) -> int:
    """Reader ``n``'s row for period "d1"."""
    state = store.subscriber_state(f"r{n}@x.test")
    assert state is not None
    did = store.plan_delivery(
        subscriber_id=state.id,
        period_key="d1",
        window_start=NOW - timedelta(days=1),
        window_end=NOW,
        message_id=f"<{n}@paperpost.test>",
        items=[PlannedItem(p, 1.0, "reason") for p in papers],
        now=NOW,
        skip_if_empty=False,
    )
    assert did is not None
    return did


def status(store: Store, did: int) -> tuple[str, str | None]:
    with store.read() as s:
        row = s.execute(
            select(DeliveryRow.status, DeliveryRow.claimed_by).where(DeliveryRow.id == did)
        ).one()
    return row[0], row[1]


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(timeout=WAIT)
    return proc.pid


@pytest.fixture
def live_process() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
    )
    yield proc
    assert proc.stdin is not None
    proc.stdin.close()
    proc.wait(timeout=WAIT)


def test_release_gives_back_only_this_holders_claimed_rows(store: Store) -> None:
    mine, on_wire, theirs = (planned(store, n) for n in range(3))
    assert store.claim(limit=2, holder="h1", now=NOW) == [mine, on_wire]
    assert store.claim(limit=1, holder="h2", now=NOW) == [theirs]
    assert store.mark_sending(on_wire, holder="h1", now=NOW)
    assert store.release([mine, on_wire, theirs], holder="h1") == 1
    assert status(store, mine) == ("pending", None)
    assert status(store, on_wire) == ("sending", "h1")  # may have left: never put back
    assert status(store, theirs) == ("claimed", "h2")
    assert store.release([theirs], holder="h1") == 0


def test_recover_dead_takes_back_the_claims_of_dead_processes_of_this_host(
    store: Store, live_process: subprocess.Popen[bytes]
) -> None:
    host, gone = "this-host", dead_pid()
    holders = {
        "dead claim": f"{host}:{gone}",
        "dead sending": f"{host}:{gone}",
        "live claim": f"{host}:{live_process.pid}",
        "own claim": f"{host}:{os.getpid()}",
        "other host": f"other-host:{gone}",
        "not a pid": host,
    }
    ids = {}
    for n, (what, holder) in enumerate(holders.items()):
        ids[what] = planned(store, n)
        assert store.claim(limit=1, holder=holder, now=NOW) == [ids[what]]
    assert store.mark_sending(ids["dead sending"], holder=holders["dead sending"], now=NOW)
    # No waiting for the stale-claim limit: the clock has not moved.
    result = store.recover_dead(host=host, alive=process_alive, now=NOW)
    assert result == (1, [ids["dead sending"]])
    after = {what: status(store, did) for what, did in ids.items()}
    assert after == {
        "dead claim": ("pending", None),
        "dead sending": ("sending", holders["dead sending"]),  # for the ambiguous policy
        "live claim": ("claimed", holders["live claim"]),
        "own claim": ("claimed", holders["own claim"]),
        "other host": ("claimed", holders["other host"]),
        "not a pid": ("claimed", host),
    }
    assert store.recover_dead(host=host, alive=process_alive, now=NOW) == (
        0,
        [ids["dead sending"]],
    )


def test_an_outcome_before_data_is_recorded_from_claimed(store: Store) -> None:
    greylisted, refused = planned(store, 0), planned(store, 1, ("p1",))
    assert store.claim(limit=2, holder="h", now=NOW) == [greylisted, refused]
    later = NOW + timedelta(minutes=5)
    # Another sender's outcome for our rows is refused: only the holder records one.
    assert not store.mark_deferred(greylisted, error="451", retry_at=later, now=NOW, holder="x")
    assert not store.mark_failed(refused, error="550", now=NOW, holder="x")
    assert store.mark_deferred(
        greylisted, error="451 greylisted", retry_at=later, now=NOW, holder="h"
    )
    assert store.mark_failed(refused, error="550 no such user", now=NOW, holder="h")
    assert store.load_delivery(greylisted).attempts == 1  # a try, though never "sending"
    assert (store.load_delivery(refused).status, store.load_delivery(refused).attempts) == (
        "failed",
        0,
    )
    sid = store.load_delivery(refused).subscriber_id
    assert store.reserved_papers([sid], ["p1"]) == {}  # a later digest may carry it
    assert store.claim(limit=2, holder="h", now=later) == [greylisted]
    assert store.mark_sending(greylisted, holder="h", now=later)
    assert store.mark_deferred(greylisted, error="451 again", retry_at=later, now=later, holder="h")
    assert store.load_delivery(greylisted).attempts == 2  # this try counted once


def test_process_alive_against_real_processes(live_process: subprocess.Popen[bytes]) -> None:
    assert process_alive(os.getpid())
    assert process_alive(live_process.pid)
    assert not process_alive(dead_pid())
    # Killed but not yet reaped by its parent (this process): a zombie is dead too.
    zombie = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
    )
    try:
        zombie.kill()
        os.waitid(os.P_PID, zombie.pid, os.WEXITED | os.WNOWAIT)  # exited, left unreaped
        assert Path(f"/proc/{zombie.pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
        assert not process_alive(zombie.pid)
    finally:
        zombie.wait(timeout=WAIT)
