"""The outbox contract (``pipeline.store.port.Outbox``): one suite, run over every
implementation: ``MemoryOutbox``, and ``Store`` on SQLite and on PostgreSQL.

Everything is observed through the port itself (``list_deliveries``, ``reserved_papers``,
``outbox_counts``), so the same assertions hold for each backend. The only thing a backend
brings of its own is how a test adds a reader and changes its status (``Readers``).

The static half of "every implementation satisfies the port" is in ``pipeline.store.port``
(checked by ``mypy``); ``test_every_backend_has_the_ports_methods_with_its_parameters`` is
the run-time half.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Protocol, cast

import pytest
from sqlalchemy import Table, insert, select, update

from pipeline.errors import StoreError
from pipeline.store import Outbox, OutboxEntry, PlannedDelivery, PlannedItem, Store
from pipeline.store.memory import MemoryOutbox
from pipeline.store.rows import DeliveryItemRow, SentItemRow, SubscriberRow
from tests.factories import MONDAY_8AM as NOW
from tests.factories import plan_row as plan

MINUTE = timedelta(minutes=1)
LEASE = timedelta(minutes=10)


# -- backends ------------------------------------------------------------------------------------
class Readers(Protocol):
    """How a test adds a reader and changes its status, per backend."""

    def add(self, status: str = "active") -> int: ...

    def set_status(self, subscriber_id: int, status: str) -> None: ...


class MemoryReaders:
    def __init__(self, outbox: MemoryOutbox) -> None:
        self.outbox = outbox
        self.count = 0

    def add(self, status: str = "active") -> int:
        self.count += 1
        sid = 100 + self.count  # any ids will do; not 1, 2, 3 like the databases'
        self.outbox.add_subscriber(sid, status, email=f"r{self.count}@x.test")
        return sid

    def set_status(self, subscriber_id: int, status: str) -> None:
        self.outbox.set_status(subscriber_id, status)


class SqlReaders:
    """Readers as rows of the subscribers table, written directly: the columns the outbox
    needs (address, status, created_at); every other column takes its default."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.table = cast("Table", SubscriberRow.__table__)
        self.count = 0

    def add(self, status: str = "active") -> int:
        self.count += 1
        with self.store.begin() as conn:
            result = conn.execute(
                insert(self.table).values(
                    email=f"r{self.count}@x.test", status=status, created_at=NOW
                )
            )
            key = result.inserted_primary_key
            assert key is not None
            return int(key[0])

    def set_status(self, subscriber_id: int, status: str) -> None:
        with self.store.begin() as conn:
            conn.execute(
                update(self.table).where(self.table.c.id == subscriber_id).values(status=status)
            )


@dataclass
class Backend:
    name: str
    outbox: Outbox
    readers: Readers


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "memory":
        memory = MemoryOutbox()
        yield Backend("memory", memory, MemoryReaders(memory))
        return
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'outbox.db'}"
    else:
        url = request.getfixturevalue("pg_url")  # skips, or fails, by the conftest rules
    store = Store.open(url, auto_upgrade=True)
    try:
        yield Backend(request.param, store, SqlReaders(store))
    finally:
        store.close()


# -- helpers -------------------------------------------------------------------------------------
def planned(outbox: Outbox, sid: int, key: str, papers: list[str], **kw: object) -> int:
    row = plan(outbox, sid, key, papers, **kw)  # type: ignore[arg-type]
    assert row is not None
    return row


def entry(outbox: Outbox, delivery_id: int) -> OutboxEntry:
    return {e.id: e for e in outbox.list_deliveries(limit=100_000)}[delivery_id]


def status(outbox: Outbox, delivery_id: int) -> str:
    return entry(outbox, delivery_id).status


# -- the port itself -----------------------------------------------------------------------------
PORT_METHODS = sorted(
    name
    for name, value in vars(Outbox).items()
    if inspect.isfunction(value) and not name.startswith("_")
)


def test_every_backend_has_the_ports_methods_with_its_parameters(backend: Backend) -> None:
    """The runtime half of the type check: same methods, same parameter names and kinds, a
    default wherever the port has one, no extra required parameter."""
    assert isinstance(backend.outbox, Outbox)
    assert (
        sorted(
            [
                *("periods_present", "last_window_ends", "reserved_papers", "plan_delivery"),
                "plan_deliveries",
                *("claim", "mark_sending", "mark_sent", "mark_deferred", "mark_failed"),
                *("mark_ambiguous", "release", "recover_stale", "recover_dead", "requeue"),
                *("list_deliveries", "outbox_counts"),
            ]
        )
        == PORT_METHODS
    )
    problems = []
    for name in PORT_METHODS:
        want = dict(inspect.signature(getattr(Outbox, name)).parameters)
        want.pop("self")
        got = inspect.signature(getattr(backend.outbox, name)).parameters
        for pname, param in want.items():
            mine = got.get(pname)
            if mine is None or mine.kind != param.kind:
                problems.append(f"{name}: parameter {pname} missing or of another kind")
            elif param.default is not param.empty and mine.default != param.default:
                problems.append(f"{name}: {pname} defaults to {mine.default!r}")
        problems.extend(
            f"{name}: extra required parameter {pname}"
            for pname, mine in got.items()
            if pname not in want and mine.default is mine.empty
        )
    assert problems == []


# -- planning ------------------------------------------------------------------------------------
def test_one_row_per_subscriber_and_period(backend: Backend) -> None:
    outbox, readers = backend.outbox, backend.readers
    a, b = readers.add(), readers.add()
    first = plan(outbox, a, "2026-11-23", ["p1"])
    assert first is not None
    assert plan(outbox, a, "2026-11-23", ["p2"]) is None  # the period has its row
    assert plan(outbox, b, "2026-11-23", ["p1"]) is not None  # another reader's
    assert outbox.periods_present({(a, "2026-11-23"), (a, "2026-11-24"), (b, "x")}) == {
        (a, "2026-11-23")
    }
    assert outbox.periods_present(set()) == set()
    assert outbox.reserved_papers([a], ["p1", "p2"]) == {a: {"p1"}}  # p2 never reserved


def test_a_new_row_is_pending_and_due_at_once(backend: Backend) -> None:
    outbox = backend.outbox
    sid = backend.readers.add()
    row = entry(outbox, planned(outbox, sid, "d1", ["p1", "p2"]))
    assert (row.status, row.attempts, row.item_count) == ("pending", 0, 2)
    assert (row.next_attempt_at, row.created_at, row.sent_at) == (NOW, NOW, None)
    assert (row.subscriber_id, row.email, row.period_key) == (sid, "r1@x.test", "d1")
    assert (row.message_id, row.last_error) == (f"<{sid}.d1@paperpost.test>", None)


def test_an_empty_period_is_skipped_under_the_skip_policy(backend: Backend) -> None:
    outbox = backend.outbox
    sid = backend.readers.add()
    first = planned(outbox, sid, "d0", ["p1"])
    empty = planned(outbox, sid, "d1", [], skip_if_empty=True)
    emptied = planned(outbox, sid, "d2", ["p1"], skip_if_empty=True)  # p1 is d0's
    sent_anyway = planned(outbox, sid, "d3", ["p1"], skip_if_empty=False)
    assert [status(outbox, i) for i in (empty, emptied, sent_anyway)] == [
        "skipped",
        "skipped",
        "pending",
    ]
    assert entry(outbox, sent_anyway).item_count == 0
    assert outbox.claim(limit=10, holder="h", now=NOW) == [first, sent_anyway]  # not skipped


def test_a_paper_is_reserved_once_per_reader(backend: Backend) -> None:
    outbox, readers = backend.outbox, backend.readers
    a, b = readers.add(), readers.add()
    planned(outbox, a, "d1", ["p1"])
    second = planned(outbox, a, "d2", ["p1", "p2"])
    assert entry(outbox, second).item_count == 1  # p1 dropped: d1 has it
    assert outbox.reserved_papers([a], ["p1", "p2", "p3"]) == {a: {"p1", "p2"}}
    assert entry(outbox, planned(outbox, b, "d1", ["p1"])).item_count == 1  # b may have it
    assert outbox.reserved_papers([a, b], ["p1"]) == {a: {"p1"}, b: {"p1"}}


def test_last_window_ends_counts_covered_rows_only(backend: Backend) -> None:
    outbox, readers = backend.outbox, backend.readers
    a, b, c = readers.add(), readers.add(), readers.add()
    planned(outbox, a, "d1", [], now=NOW)
    planned(outbox, a, "d2", [], now=NOW + MINUTE)
    failing = planned(outbox, b, "d1", [], now=NOW)
    assert outbox.claim(limit=10, holder="h", now=NOW + MINUTE) != []
    assert outbox.mark_failed(failing, error="550", now=NOW)
    planned(outbox, c, "d1", [], now=NOW, skip_if_empty=True)  # skipped: covered
    assert outbox.last_window_ends([a, b, c]) == {a: NOW + MINUTE, c: NOW}


# -- planning in bulk ----------------------------------------------------------------------------
def bulk(
    sid: int, key: str, papers: list[str], *, skip_if_empty: bool = False, version: int = 1
) -> PlannedDelivery:
    return PlannedDelivery(
        subscriber_id=sid,
        period_key=key,
        window_start=NOW - timedelta(days=1),
        window_end=NOW,
        message_id=f"<{sid}.{key}@paperpost.test>",
        items=[PlannedItem(p, 1.0 - i / 100, f"reason {p}") for i, p in enumerate(papers)],
        skip_if_empty=skip_if_empty,
        subscriber_version=version,
    )


def items_written(outbox: Outbox) -> dict[int, list[str]]:
    """{row id: its papers in rank order}, for every row, checked against the row's
    ``item_count`` and its reservations. The port has no reader of items, so this looks
    into each backend: the tables on SQL, the rows on the memory outbox."""
    if isinstance(outbox, MemoryOutbox):
        written = {row.id: [i.paper_id for i in row.items] for row in outbox._rows.values()}
        holds = {(sid, pid): row for (sid, pid), row in outbox._reserved.items()}
    else:
        assert isinstance(outbox, Store)
        items, sent = cast("Table", DeliveryItemRow.__table__), cast("Table", SentItemRow.__table__)
        written = {e.id: [] for e in outbox.list_deliveries(limit=100_000)}
        with outbox.connect() as conn:
            ranked = conn.execute(
                select(items.c.delivery_id, items.c.rank, items.c.paper_id).order_by(
                    items.c.delivery_id, items.c.rank
                )
            ).all()
            holds = {
                (row.subscriber_id, row.paper_id): row.delivery_id
                for row in conn.execute(select(sent))
            }
        for row_id, rank, paper_id in ranked:
            assert rank == len(written[row_id]), (row_id, rank)  # 0, 1, 2, ... no gaps
            written[row_id].append(paper_id)
    entries = {e.id: e for e in outbox.list_deliveries(limit=100_000)}
    for row_id, papers in written.items():
        e = entries[row_id]
        assert e.item_count == len(papers), (row_id, e.item_count, papers)
        if e.status not in ("failed", "cancelled"):  # those gave their papers up
            assert all(holds.get((e.subscriber_id, p)) == row_id for p in papers), row_id
    return written


def test_plan_deliveries_writes_a_block_in_order(backend: Backend) -> None:
    outbox, readers = backend.outbox, backend.readers
    a, b, c = readers.add(), readers.add(), readers.add()
    ids = outbox.plan_deliveries(
        [bulk(a, "d1", ["p3", "p1", "p2"]), bulk(b, "d1", ["p1"]), bulk(c, "d1", [], version=7)],
        now=NOW,
    )
    assert None not in ids and len(set(ids)) == 3
    ra, rb, rc = (entry(outbox, i) for i in ids if i is not None)
    assert [(r.subscriber_id, r.period_key, r.status, r.item_count) for r in (ra, rb, rc)] == [
        (a, "d1", "pending", 3),
        (b, "d1", "pending", 1),
        (c, "d1", "pending", 0),
    ]
    assert (ra.next_attempt_at, ra.created_at, ra.attempts) == (NOW, NOW, 0)
    assert ra.message_id == f"<{a}.d1@paperpost.test>"
    assert items_written(outbox)[ra.id] == ["p3", "p1", "p2"]  # the given order
    assert outbox.plan_deliveries([], now=NOW) == []
    assert outbox.claim(limit=10, holder="h", now=NOW) == [ra.id, rb.id, rc.id]


def test_plan_deliveries_leaves_existing_rows_and_reserves_nothing_for_them(
    backend: Backend,
) -> None:
    outbox, readers = backend.outbox, backend.readers
    a, b = readers.add(), readers.add()
    first = planned(outbox, a, "d1", ["p1"])
    ids = outbox.plan_deliveries([bulk(a, "d1", ["p2", "p3"]), bulk(b, "d1", ["p2"])], now=NOW)
    assert ids[0] is None and ids[1] is not None
    assert outbox.reserved_papers([a, b], ["p1", "p2", "p3"]) == {a: {"p1"}, b: {"p2"}}
    assert entry(outbox, first).item_count == 1
    assert outbox.outbox_counts() == {"pending": 2}
    # A later block of the same reader may carry them: nothing was taken.
    [later] = outbox.plan_deliveries([bulk(a, "d2", ["p2", "p3"])], now=NOW)
    assert later is not None and entry(outbox, later).item_count == 2
    items_written(outbox)


def test_plan_deliveries_drops_papers_already_reserved(backend: Backend) -> None:
    outbox, readers = backend.outbox, backend.readers
    a, b = readers.add(), readers.add()
    planned(outbox, a, "d1", ["p2", "p4"])
    ids = outbox.plan_deliveries(
        [bulk(a, "d2", ["p1", "p2", "p3", "p4", "p5"]), bulk(b, "d2", ["p2", "p4"])], now=NOW
    )
    assert None not in ids
    written = items_written(outbox)
    assert [written[i] for i in ids if i is not None] == [["p1", "p3", "p5"], ["p2", "p4"]]
    assert entry(outbox, ids[0] or 0).item_count == 3
    assert outbox.reserved_papers([a], ["p1", "p2", "p3", "p4", "p5"]) == {
        a: {"p1", "p2", "p3", "p4", "p5"}
    }


def test_plan_deliveries_reads_as_one_row_after_another(backend: Backend) -> None:
    """Duplicates within one block: the same (reader, period) twice is written once (the
    later plan finds it taken: None); a reader's later row in the block loses the papers
    an earlier one reserved, but not those of a row that was not written."""
    outbox, readers = backend.outbox, backend.readers
    a, b = readers.add(), readers.add()
    existing = planned(outbox, b, "d1", ["q0"])
    ids = outbox.plan_deliveries(
        [
            bulk(a, "d1", ["p1", "p2"]),
            bulk(a, "d1", ["p3"]),  # same period again: not written
            bulk(b, "d1", ["q1", "q2"]),  # b's d1 exists: not written, reserves nothing
            bulk(a, "d2", ["p2", "p3", "p1", "p4"]),  # p1, p2 are d1's
            bulk(b, "d2", ["q2", "q1"]),  # gets them: the row above was not written
            bulk(a, "d3", ["p4", "p1"], skip_if_empty=True),  # all taken: skipped
        ],
        now=NOW,
    )
    assert [i is None for i in ids] == [False, True, True, False, False, False]
    written = items_written(outbox)
    assert [written[i] for i in ids if i is not None] == [
        ["p1", "p2"],
        ["p3", "p4"],
        ["q2", "q1"],
        [],
    ]
    assert status(outbox, ids[5] or 0) == "skipped"
    assert entry(outbox, existing).item_count == 1
    assert outbox.reserved_papers([a, b], ["p1", "p2", "p3", "p4", "q0", "q1", "q2"]) == {
        a: {"p1", "p2", "p3", "p4"},
        b: {"q0", "q1", "q2"},
    }
    assert outbox.outbox_counts() == {"pending": 4, "skipped": 1}


def test_plan_deliveries_skip_if_empty(backend: Backend) -> None:
    outbox, readers = backend.outbox, backend.readers
    a = readers.add()
    planned(outbox, a, "d0", ["p1"])
    ids = outbox.plan_deliveries(
        [
            bulk(a, "d1", [], skip_if_empty=True),  # nothing matched
            bulk(a, "d2", ["p1"], skip_if_empty=True),  # all already reserved
            bulk(a, "d3", ["p1"], skip_if_empty=False),  # sent anyway, empty
            bulk(a, "d4", ["p1", "p2"], skip_if_empty=True),  # one left
        ],
        now=NOW,
    )
    assert [(status(outbox, i or 0), entry(outbox, i or 0).item_count) for i in ids] == [
        ("skipped", 0),
        ("skipped", 0),
        ("pending", 0),
        ("pending", 1),
    ]
    items_written(outbox)


@pytest.mark.parametrize("problem", ["a paper twice", "no such reader"])
def test_plan_deliveries_is_all_or_nothing(backend: Backend, problem: str) -> None:
    outbox, readers = backend.outbox, backend.readers
    a = readers.add()
    bad = bulk(a, "d2", ["p2", "p2"]) if problem == "a paper twice" else bulk(9_999, "d1", ["p"])
    with pytest.raises(StoreError):
        outbox.plan_deliveries([bulk(a, "d1", ["p1"]), bad], now=NOW)
    assert outbox.outbox_counts() == {}
    assert outbox.reserved_papers([a], ["p1", "p2"]) == {}


def race(outbox: Outbox, blocks: list[list[PlannedDelivery]]) -> list[list[int | None]]:
    """Each block planned by a thread of its own, all released at once."""
    results: list[list[int | None]] = [[] for _ in blocks]
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(blocks))

    def worker(n: int) -> None:
        barrier.wait()
        try:
            results[n] = outbox.plan_deliveries(blocks[n], now=NOW)
        except BaseException as exc:  # reported below, with the others
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(len(blocks))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    return results


def test_two_planners_writing_the_same_block_at_once(backend: Backend) -> None:
    """Exactly one row per (reader, period), each paper reserved once, no errors: whoever
    wrote a row holds all its papers, the other planner gets None for it."""
    outbox, readers = backend.outbox, backend.readers
    sids = [readers.add() for _ in range(200)]
    papers = [f"p{n}" for n in range(40)]
    block = [bulk(sid, "d1", papers[n % 20 : n % 20 + 20]) for n, sid in enumerate(sids)]
    first, second = race(outbox, [block, list(reversed(block))])
    second.reverse()
    for one, other in zip(first, second, strict=True):
        assert (one is None) != (other is None)  # exactly one planner wrote each row
    assert sorted(i for i in first + second if i is not None) == sorted(
        e.id for e in outbox.list_deliveries(limit=1000)
    )
    assert outbox.outbox_counts() == {"pending": 200}
    written = items_written(outbox)
    assert all(len(papers) == 20 for papers in written.values())
    reserved = outbox.reserved_papers(sids, papers)
    assert reserved == {sid: set(papers[n % 20 : n % 20 + 20]) for n, sid in enumerate(sids)}


def test_two_planners_giving_one_reader_the_same_papers_at_once(backend: Backend) -> None:
    """Two periods of the same readers planned at once with overlapping papers: each paper
    is reserved by one row only, and each row keeps exactly the items it reserved."""
    outbox, readers = backend.outbox, backend.readers
    sids = [readers.add() for _ in range(200)]
    papers = [f"p{n}" for n in range(30)]
    one = [bulk(sid, "d1", papers[:20], skip_if_empty=True) for sid in sids]
    two = [bulk(sid, "d2", papers[10:], skip_if_empty=True) for sid in sids]
    first, second = race(outbox, [one, two])
    assert None not in first + second
    written = items_written(outbox)
    for sid, a, b in zip(sids, first, second, strict=True):
        mine, theirs = written[a or 0], written[b or 0]
        assert not set(mine) & set(theirs), sid
        assert sorted(mine + theirs) == sorted(papers), sid
        assert mine == [p for p in papers[:20] if p in mine]  # the given order kept
        assert theirs == [p for p in papers[10:] if p in theirs]
    assert outbox.reserved_papers(sids, papers) == {sid: set(papers) for sid in sids}
    assert sum(outbox.outbox_counts().values()) == 400


# -- claiming ------------------------------------------------------------------------------------
def test_claim_takes_due_rows_oldest_first_up_to_the_limit(backend: Backend) -> None:
    outbox, readers = backend.outbox, backend.readers
    sids = [readers.add() for _ in range(5)]
    # Due at NOW+2, NOW, NOW+1, NOW (planned later than the second: the id breaks the tie)
    # and NOW+60 (not due yet).
    offsets = [2, 0, 1, 0, 60]
    ids = [
        planned(outbox, sid, "d1", [], now=NOW + n * MINUTE)
        for sid, n in zip(sids, offsets, strict=True)
    ]
    at = NOW + 5 * MINUTE
    assert outbox.claim(limit=2, holder="h1", now=at) == [ids[1], ids[3]]
    assert outbox.claim(limit=2, holder="h2", now=at) == [ids[2], ids[0]]
    assert outbox.claim(limit=2, holder="h3", now=at) == []
    assert status(outbox, ids[4]) == "pending"
    assert outbox.claim(limit=0, holder="h3", now=NOW + 60 * MINUTE) == []
    assert outbox.claim(limit=9, holder="h3", now=NOW + 60 * MINUTE) == [ids[4]]
    assert outbox.outbox_counts() == {"claimed": 5}


def test_claim_takes_deferred_rows_again_once_due(backend: Backend) -> None:
    outbox = backend.outbox
    did = planned(outbox, backend.readers.add(), "d1", ["p1"])
    assert outbox.claim(limit=1, holder="h", now=NOW) == [did]
    assert outbox.mark_sending(did, holder="h", now=NOW)
    assert outbox.mark_deferred(did, error="451 later", retry_at=NOW + 5 * MINUTE, now=NOW)
    assert outbox.claim(limit=1, holder="h", now=NOW + 4 * MINUTE) == []
    assert outbox.claim(limit=1, holder="h2", now=NOW + 5 * MINUTE) == [did]
    row = entry(outbox, did)
    assert (row.status, row.attempts, row.last_error) == ("claimed", 1, "451 later")
    assert outbox.reserved_papers([row.subscriber_id], ["p1"]) == {row.subscriber_id: {"p1"}}


@pytest.mark.parametrize("gone", ["unsubscribed", "removed"])
def test_claim_cancels_rows_of_readers_no_longer_active(backend: Backend, gone: str) -> None:
    outbox, readers = backend.outbox, backend.readers
    leaving, staying = readers.add(), readers.add()
    first = planned(outbox, leaving, "d1", ["p1"])
    second = planned(outbox, staying, "d1", ["p1"])
    readers.set_status(leaving, gone)
    # The cancelled row fills the first batch of 1; the same call goes on to the next.
    assert outbox.claim(limit=1, holder="h", now=NOW) == [second]
    assert status(outbox, first) == "cancelled"
    assert outbox.reserved_papers([leaving, staying], ["p1"]) == {staying: {"p1"}}
    readers.set_status(leaving, "active")  # a cancelled row stays cancelled
    assert outbox.claim(limit=10, holder="h", now=NOW) == []
    assert outbox.outbox_counts() == {"cancelled": 1, "claimed": 1}


def test_concurrent_claims_are_disjoint(backend: Backend) -> None:
    outbox = backend.outbox
    ids = [planned(outbox, backend.readers.add(), "d1", []) for _ in range(24)]
    taken: list[list[int]] = [[] for _ in range(4)]
    barrier = threading.Barrier(4)

    def worker(n: int) -> None:
        barrier.wait()
        while got := outbox.claim(limit=3, holder=f"w{n}", now=NOW):
            taken[n].extend(got)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [i for got in taken for i in got]
    assert sorted(every) == sorted(ids)  # each row once, none lost


# -- marking -------------------------------------------------------------------------------------
def test_only_the_holder_may_start_sending_and_only_from_claimed(backend: Backend) -> None:
    outbox = backend.outbox
    did = planned(outbox, backend.readers.add(), "d1", [])
    assert not outbox.mark_sending(did, holder="h", now=NOW)  # pending: not claimed
    assert outbox.claim(limit=1, holder="h", now=NOW) == [did]
    assert not outbox.mark_sending(did, holder="other", now=NOW)
    assert status(outbox, did) == "claimed"
    assert outbox.mark_sending(did, holder="h", now=NOW)
    assert not outbox.mark_sending(did, holder="h", now=NOW)  # already sending
    assert (status(outbox, did), entry(outbox, did).attempts) == ("sending", 1)
    assert not outbox.mark_sending(999_999, holder="h", now=NOW)  # no such row


def test_sent_records_when(backend: Backend) -> None:
    outbox = backend.outbox
    did = planned(outbox, backend.readers.add(), "d1", ["p1"])
    outbox.claim(limit=1, holder="h", now=NOW)
    assert outbox.mark_sending(did, holder="h", now=NOW)
    assert outbox.mark_sent(did, reply="250 2.0.0 queued", now=NOW + MINUTE)
    row = entry(outbox, did)
    assert (row.status, row.sent_at, row.last_error, row.attempts) == (
        "sent",
        NOW + MINUTE,
        None,
        1,
    )
    assert outbox.reserved_papers([row.subscriber_id], ["p1"]) == {row.subscriber_id: {"p1"}}


# Starting state -> how a row gets there through the port.
PATHS: dict[str, list[str]] = {
    "pending": [],
    "skipped": ["skip"],
    "claimed": ["claim"],
    "sending": ["claim", "sending"],
    "sent": ["claim", "sending", "sent"],
    "deferred": ["claim", "sending", "deferred"],
    "failed": ["claim", "sending", "failed"],
    "ambiguous": ["claim", "sending", "ambiguous"],
    "cancelled": ["unsubscribe", "claim"],
}
# Mark -> (the states it leaves from, the state it leads to).
MARKS: dict[str, tuple[set[str], str]] = {
    "sending": ({"claimed"}, "sending"),
    "sent": ({"sending"}, "sent"),
    "deferred": ({"claimed", "sending"}, "deferred"),
    "failed": ({"claimed", "sending"}, "failed"),
    "ambiguous": ({"sending"}, "ambiguous"),
}
# The states whose row holds its papers.
HOLDING = {"pending", "claimed", "sending", "sent", "deferred", "ambiguous"}


def row_in(backend: Backend, start: str, papers: list[str]) -> tuple[int, int]:
    """(reader, row) of a new reader with one row brought to ``start`` through the port.
    Its claims take every due row: set up ``pending`` rows after the others."""
    outbox, path = backend.outbox, PATHS[start]
    sid = backend.readers.add()
    did = planned(outbox, sid, "d1", [] if "skip" in path else papers, skip_if_empty=True)
    for step in path:
        if step == "unsubscribe":
            backend.readers.set_status(sid, "unsubscribed")
        elif step == "claim":
            outbox.claim(limit=1000, holder="h", now=NOW)
        elif step != "skip":
            assert mark(outbox, step, did), (start, step)
    assert status(outbox, did) == start
    return sid, did


def mark(outbox: Outbox, name: str, did: int) -> bool:
    later = NOW + timedelta(hours=1)  # a deferred row is not due again during the test
    if name == "sending":
        return outbox.mark_sending(did, holder="h", now=NOW)
    if name == "sent":
        return outbox.mark_sent(did, reply="250 ok", now=NOW)
    if name == "deferred":
        return outbox.mark_deferred(did, error="451 later", retry_at=later, now=NOW)
    if name == "failed":
        return outbox.mark_failed(did, error="550 no such user", now=NOW)
    return outbox.mark_ambiguous(did, error="dropped after the final dot", now=NOW)


@pytest.mark.parametrize("name", list(MARKS))
def test_each_mark_moves_rows_only_from_its_states(backend: Backend, name: str) -> None:
    """Every mark from every state: it moves the row only from the states it leaves from;
    from any other it writes nothing and returns False. ``failed`` releases the papers."""
    outbox = backend.outbox
    sources, target = MARKS[name]
    for start in PATHS:
        sid, did = row_in(backend, start, ["p"])
        before = entry(outbox, did)
        assert before.status == start
        moved = mark(outbox, name, did)
        after = entry(outbox, did)
        assert moved == (start in sources), (name, start)
        assert after.status == (target if moved else start), (name, start)
        if not moved:
            assert after == before, (name, start)
        holds = outbox.reserved_papers([sid], ["p"]) == {sid: {"p"}}
        assert holds == (after.status in HOLDING and after.item_count == 1), (name, start)


def test_an_outcome_before_data_counts_an_attempt(backend: Backend) -> None:
    """A 4xx before DATA (deferred straight from ``claimed``) counts an attempt, as
    ``mark_sending`` does on the way to DATA; each try counts once."""
    outbox = backend.outbox
    did = planned(outbox, backend.readers.add(), "d1", [])
    assert outbox.claim(limit=1, holder="h", now=NOW) == [did]
    assert outbox.mark_deferred(did, error="421 busy", retry_at=NOW, now=NOW)
    assert entry(outbox, did).attempts == 1
    assert outbox.claim(limit=1, holder="h", now=NOW) == [did]
    assert outbox.mark_sending(did, holder="h", now=NOW)
    assert outbox.mark_deferred(did, error="451 later", retry_at=NOW, now=NOW)
    assert entry(outbox, did).attempts == 2


@pytest.mark.parametrize("outcome", ["deferred", "failed"])
def test_a_sender_that_lost_its_claim_cannot_record_an_outcome(
    backend: Backend, outcome: str
) -> None:
    """With ``holder``, deferred and failed move only that sender's row; without (recovery
    acting for a dead sender), any."""
    outbox = backend.outbox
    sid = backend.readers.add()
    did = planned(outbox, sid, "d1", ["p1"])
    assert outbox.claim(limit=1, holder="slow", now=NOW) == [did]
    assert outbox.recover_stale(now=NOW + 2 * LEASE, older_than=LEASE) == (1, [])
    assert outbox.claim(limit=1, holder="fresh", now=NOW + 2 * LEASE) == [did]

    def record(holder: str | None) -> bool:
        if outcome == "deferred":
            retry_at = NOW + 3 * LEASE
            return outbox.mark_deferred(did, error="421", retry_at=retry_at, now=NOW, holder=holder)
        return outbox.mark_failed(did, error="550", now=NOW, holder=holder)

    before = entry(outbox, did)
    assert not record("slow")
    assert entry(outbox, did) == before
    assert outbox.reserved_papers([sid], ["p1"]) == {sid: {"p1"}}
    assert record("fresh")
    assert status(outbox, did) == outcome
    # Without a holder: any claimed or sending row (the recovery of a dead sender).
    again = planned(outbox, sid, "d2", [])
    assert outbox.claim(limit=1, holder="gone", now=NOW + 4 * LEASE) == [again]
    assert outbox.mark_sending(again, holder="gone", now=NOW + 4 * LEASE)
    if outcome == "deferred":
        assert outbox.mark_deferred(again, error="x", retry_at=NOW + 5 * LEASE, now=NOW)
    else:
        assert outbox.mark_failed(again, error="x", now=NOW)


def test_failed_releases_papers_for_a_later_digest(backend: Backend) -> None:
    outbox = backend.outbox
    sid = backend.readers.add()
    did = planned(outbox, sid, "d1", ["p1", "p2"])
    assert outbox.claim(limit=1, holder="h", now=NOW) == [did]
    assert outbox.mark_failed(did, error="not built", now=NOW)  # straight from claimed
    assert outbox.reserved_papers([sid], ["p1", "p2"]) == {}
    assert entry(outbox, planned(outbox, sid, "d2", ["p1", "p2"])).item_count == 2
    assert entry(outbox, did).last_error == "not built"


# -- giving rows back ----------------------------------------------------------------------------
def test_release_gives_back_only_the_holders_claimed_rows(backend: Backend) -> None:
    outbox, readers = backend.outbox, backend.readers
    mine, on_wire, theirs, done = (planned(outbox, readers.add(), "d1", []) for _ in range(4))
    assert outbox.claim(limit=2, holder="h1", now=NOW) == [mine, on_wire]
    assert outbox.claim(limit=1, holder="h2", now=NOW) == [theirs]
    assert outbox.claim(limit=1, holder="h1", now=NOW) == [done]
    assert outbox.mark_sending(on_wire, holder="h1", now=NOW)
    assert outbox.mark_sending(done, holder="h1", now=NOW)
    assert outbox.mark_sent(done, reply="250 ok", now=NOW)
    assert outbox.release([mine, on_wire, theirs, done, 999_999], holder="h1") == 1
    assert outbox.release([], holder="h1") == 0
    assert [status(outbox, i) for i in (mine, on_wire, theirs, done)] == [
        "pending",
        "sending",  # never back to pending: it may have left
        "claimed",  # h2's claim
        "sent",
    ]
    assert outbox.claim(limit=10, holder="h3", now=NOW) == [mine]
    assert outbox.mark_sending(theirs, holder="h2", now=NOW)  # h2's claim survived


def test_recover_stale_returns_old_claims_and_reports_old_sending_rows(backend: Backend) -> None:
    outbox, readers = backend.outbox, backend.readers
    old_claim, old_sending, young_sending, fresh = (
        planned(outbox, readers.add(), "d1", []) for _ in range(4)
    )
    assert outbox.claim(limit=3, holder="dead", now=NOW) == [old_claim, old_sending, young_sending]
    assert outbox.mark_sending(old_sending, holder="dead", now=NOW)
    # mark_sending renews the lease: this one started its exchange just now.
    assert outbox.mark_sending(young_sending, holder="dead", now=NOW + 9 * MINUTE)
    assert outbox.claim(limit=1, holder="alive", now=NOW + 9 * MINUTE) == [fresh]
    later = NOW + 11 * MINUTE
    assert outbox.recover_stale(now=later, older_than=LEASE) == (1, [old_sending])
    assert [status(outbox, i) for i in (old_claim, old_sending, young_sending, fresh)] == [
        "pending",
        "sending",
        "sending",
        "claimed",
    ]
    # The stalled sender wakes up: its claim was taken back, someone else has it now.
    assert outbox.claim(limit=10, holder="alive", now=later) == [old_claim]
    assert not outbox.mark_sending(old_claim, holder="dead", now=later)
    assert outbox.mark_sending(old_claim, holder="alive", now=later)
    assert outbox.recover_stale(now=later, older_than=LEASE) == (0, [old_sending])


def test_recover_dead_frees_the_rows_of_dead_processes_at_once(backend: Backend) -> None:
    outbox, readers = backend.outbox, backend.readers
    holders = ["host-a:100", "host-a:100", "host-a:200", "host-b:100", "host-a"]
    ids = [planned(outbox, readers.add(), "d1", []) for _ in holders]
    for did, holder in zip(ids, holders, strict=True):
        assert outbox.claim(limit=1, holder=holder, now=NOW) == [did]
    dead_claim, dead_sending, alive_claim, other_host, odd = ids
    assert outbox.mark_sending(dead_sending, holder="host-a:100", now=NOW)
    asked: list[int] = []

    def alive(pid: int) -> bool:
        asked.append(pid)
        return pid == 200

    # No lease to wait for: the process is gone.
    assert outbox.recover_dead(host="host-a", alive=alive, now=NOW) == (1, [dead_sending])
    assert set(asked) <= {100, 200}
    assert [status(outbox, i) for i in ids] == [
        "pending",
        "sending",  # for the ambiguous-delivery policy, not resent blindly
        "claimed",
        "claimed",
        "claimed",
    ]
    assert outbox.claim(limit=10, holder="host-a:300", now=NOW) == [dead_claim]
    assert outbox.mark_sending(alive_claim, holder="host-a:200", now=NOW)
    assert outbox.mark_sending(other_host, holder="host-b:100", now=NOW)
    assert outbox.mark_sending(odd, holder="host-a", now=NOW)


# -- requeue -------------------------------------------------------------------------------------
def test_requeue_moves_failed_and_ambiguous_rows_only(backend: Backend) -> None:
    outbox = backend.outbox
    order = [start for start in PATHS if start != "pending"] + ["pending"]
    rows = {start: row_in(backend, start, ["p"])[1] for start in order}
    before = {start: entry(outbox, did) for start, did in rows.items()}
    later = NOW + timedelta(hours=2)
    assert outbox.requeue(now=later) == 2
    for start, did in rows.items():
        after = entry(outbox, did)
        if start in ("failed", "ambiguous"):
            assert (after.status, after.next_attempt_at) == ("pending", later)
            assert after.message_id == before[start].message_id  # the same message again
            assert after.attempts == before[start].attempts
        else:
            assert after == before[start], start
    assert outbox.requeue(now=later) == 0  # nothing left to move
    with pytest.raises(ValueError, match="only failed and ambiguous"):
        outbox.requeue(statuses=("failed", "sent"), now=later)
    with pytest.raises(ValueError, match="only failed and ambiguous"):
        outbox.requeue(statuses=("claimed",), now=later)
    # Requeued rows are claimed like any other (due at NOW, NOW + 1 h, NOW + 2 h).
    assert outbox.claim(limit=10, holder="h2", now=later) == [
        rows["pending"],
        rows["deferred"],
        rows["failed"],
        rows["ambiguous"],
    ]


def test_requeue_filters(backend: Backend) -> None:
    outbox, readers = backend.outbox, backend.readers
    a, b = readers.add(), readers.add()
    rows = {(sid, key): planned(outbox, sid, key, []) for sid in (a, b) for key in ("d1", "d2")}
    assert outbox.claim(limit=10, holder="h", now=NOW) == list(rows.values())
    for (_, key), did in rows.items():
        assert outbox.mark_sending(did, holder="h", now=NOW)
        if key == "d1":
            assert outbox.mark_failed(did, error="550", now=NOW)
        else:
            assert outbox.mark_ambiguous(did, error="eof after dot", now=NOW)
    assert outbox.requeue(ids=[], now=NOW) == 0
    assert outbox.requeue(statuses=(), now=NOW) == 0
    assert outbox.requeue(ids=[rows[a, "d1"], rows[a, "d2"]], statuses=["ambiguous"], now=NOW) == 1
    assert status(outbox, rows[a, "d2"]) == "pending"
    assert status(outbox, rows[a, "d1"]) == "failed"
    assert outbox.requeue(subscriber_id=b, statuses=["failed"], now=NOW) == 1
    assert status(outbox, rows[b, "d1"]) == "pending"
    assert outbox.requeue(subscriber_id=b, now=NOW) == 1  # b's ambiguous one
    assert outbox.outbox_counts() == {"pending": 3, "failed": 1}


def test_requeue_reserves_papers_again_dropping_those_taken_meanwhile(backend: Backend) -> None:
    """A failed row gave its papers up; when it is requeued it takes back those nobody
    took, and loses those another digest of the same reader now carries: a paper is never
    sent twice to one reader."""
    outbox, readers = backend.outbox, backend.readers
    sid, other = readers.add(), readers.add()
    failed = planned(outbox, sid, "d1", ["p1", "p2"])
    elsewhere = planned(outbox, other, "d1", ["p1"])
    assert outbox.claim(limit=10, holder="h", now=NOW) == [failed, elsewhere]
    assert outbox.mark_failed(failed, error="550", now=NOW)
    meanwhile = planned(outbox, sid, "d2", ["p1", "p3"])  # takes p1, now free
    assert outbox.requeue(ids=[failed], now=NOW) == 1
    assert entry(outbox, failed).item_count == 1  # p2 only
    assert outbox.reserved_papers([sid], ["p1", "p2", "p3"]) == {sid: {"p1", "p2", "p3"}}
    # Which row holds which: when "meanwhile" fails, p1 and p3 go free, p2 stays reserved.
    assert outbox.claim(limit=10, holder="h", now=NOW) == [failed, meanwhile]
    assert outbox.mark_failed(meanwhile, error="550", now=NOW)
    assert outbox.reserved_papers([sid], ["p1", "p2", "p3"]) == {sid: {"p2"}}
    # Another reader's reservation of p1 never mattered.
    assert outbox.reserved_papers([other], ["p1"]) == {other: {"p1"}}


def test_requeue_of_two_rows_wanting_one_paper_keeps_it_in_the_older(backend: Backend) -> None:
    outbox = backend.outbox
    sid = backend.readers.add()
    older = planned(outbox, sid, "d1", ["p1", "p2"])
    assert outbox.claim(limit=1, holder="h", now=NOW) == [older]
    assert outbox.mark_failed(older, error="550", now=NOW)
    newer = planned(outbox, sid, "d2", ["p1"])
    assert outbox.claim(limit=1, holder="h", now=NOW) == [newer]
    assert outbox.mark_failed(newer, error="550", now=NOW)
    assert outbox.requeue(subscriber_id=sid, now=NOW) == 2
    assert (entry(outbox, older).item_count, entry(outbox, newer).item_count) == (2, 0)
    assert status(outbox, newer) == "pending"  # left with nothing, it still goes back
    assert outbox.reserved_papers([sid], ["p1", "p2"]) == {sid: {"p1", "p2"}}


def test_an_ambiguous_row_keeps_its_papers_throughout(backend: Backend) -> None:
    outbox = backend.outbox
    sid = backend.readers.add()
    did = planned(outbox, sid, "d1", ["p1"])
    outbox.claim(limit=1, holder="h", now=NOW)
    assert outbox.mark_sending(did, holder="h", now=NOW)
    assert outbox.mark_ambiguous(did, error="eof after dot", now=NOW)
    assert entry(outbox, planned(outbox, sid, "d2", ["p1"])).item_count == 0
    assert outbox.requeue(ids=[did], now=NOW) == 1
    assert entry(outbox, did).item_count == 1
    assert outbox.reserved_papers([sid], ["p1"]) == {sid: {"p1"}}


# -- reading -------------------------------------------------------------------------------------
def test_list_deliveries_filters_and_orders_newest_first(backend: Backend) -> None:
    outbox, readers = backend.outbox, backend.readers
    a, b = readers.add(), readers.add()
    a1 = planned(outbox, a, "d1", ["p1"], now=NOW)
    b1 = planned(outbox, b, "d1", [], now=NOW)  # same created_at: the id decides
    a2 = planned(outbox, a, "d2", ["p2", "p3"], now=NOW + MINUTE)
    outbox.claim(limit=1, holder="h", now=NOW)
    assert [e.id for e in outbox.list_deliveries()] == [a2, b1, a1]
    assert [e.id for e in outbox.list_deliveries(limit=2)] == [a2, b1]
    assert [e.id for e in outbox.list_deliveries(subscriber_id=a)] == [a2, a1]
    assert [e.id for e in outbox.list_deliveries(period_key="d1")] == [b1, a1]
    assert [e.id for e in outbox.list_deliveries(statuses=["pending"])] == [a2, b1]
    assert [e.id for e in outbox.list_deliveries(statuses={"claimed", "sent"})] == [a1]
    assert outbox.list_deliveries(statuses=[]) == []
    assert [e.id for e in outbox.list_deliveries(subscriber_id=a, period_key="d1")] == [a1]
    assert outbox.list_deliveries(subscriber_id=b, statuses=["claimed"]) == []
    assert entry(outbox, a2) == OutboxEntry(
        id=a2,
        subscriber_id=a,
        email="r1@x.test",
        period_key="d2",
        status="pending",
        attempts=0,
        next_attempt_at=NOW + MINUTE,
        created_at=NOW + MINUTE,
        sent_at=None,
        message_id=f"<{a}.d2@paperpost.test>",
        last_error=None,
        item_count=2,
    )


def test_outbox_counts_by_state(backend: Backend) -> None:
    outbox, readers = backend.outbox, backend.readers
    assert outbox.outbox_counts() == {}
    ids = [planned(outbox, readers.add(), "d1", []) for _ in range(4)]
    planned(outbox, readers.add(), "d1", [], skip_if_empty=True)
    outbox.claim(limit=3, holder="h", now=NOW)
    outbox.mark_sending(ids[0], holder="h", now=NOW)
    outbox.mark_sent(ids[0], reply="250", now=NOW)
    outbox.mark_failed(ids[1], error="550", now=NOW)
    assert outbox.outbox_counts() == {
        "sent": 1,
        "failed": 1,
        "claimed": 1,
        "pending": 1,
        "skipped": 1,
    }
