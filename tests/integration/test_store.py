"""The store's contract, on SQLite and PostgreSQL alike."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import time, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from pipeline.domain import Paper, Profile, Schedule, Subscriber
from pipeline.errors import StoreError
from pipeline.ingest.merge import merge_batch
from pipeline.store import PaperCache, Store, deliveries
from tests.factories import MONDAY_8AM as NOW
from tests.factories import plan_row as plan


def subscriber(email: str) -> Subscriber:
    return Subscriber(
        email=email, name=None, schedule=Schedule("daily", time(8), "UTC"), profile=Profile()
    )


def paper(pid: str, version: int | None = None, **kw: object) -> Paper:
    return Paper(id=pid, title=f"Title of {pid}", version=version, **kw)  # type: ignore[arg-type]


def sub_id(store: Store, email: str) -> int:
    state = store.subscriber_state(email)
    assert state is not None
    return state.id


def test_fresh_sqlite_file_is_migrated(tmp_path: Path) -> None:
    store = Store.open(f"sqlite:///{tmp_path / 'new.db'}")
    assert store.count_papers() == 0
    store.close()


def test_database_behind_the_code_asks_for_db_upgrade(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    engine = create_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE unrelated (x INTEGER)"))
    engine.dispose()
    with pytest.raises(
        StoreError,
        match=r"without a Paperpost schema, the code needs revision \w+: "
        r"run `paperpost db upgrade`",
    ):
        Store.open(f"sqlite:///{path}")
    Store.open(f"sqlite:///{path}", auto_upgrade=True).close()
    Store.open(f"sqlite:///{path}").close()  # now at head: opens without upgrading


def test_postgres_is_never_migrated_implicitly(pg_url: str) -> None:
    with pytest.raises(StoreError, match="run `paperpost db upgrade`"):
        Store.open(pg_url)


def test_papers_keep_first_seen_and_record_versions(store: Store) -> None:
    assert store.save_papers([paper("2401.00001", 1)], now=NOW).new == 1
    later = NOW + timedelta(days=2)
    stats = store.save_papers([paper("2401.00001", 2, abstract="revised")], now=later)
    assert (stats.new, stats.updated) == (0, 1)
    stored = store.papers_by_id(["2401.00001"])["2401.00001"]
    assert stored.first_seen == NOW
    assert stored.version == 2
    assert stored.abstract == "revised"
    assert store.paper_versions("2401.00001") == [1, 2]
    assert store.save_papers([paper("2401.00001", 2, abstract="revised")], now=later).unchanged == 1


def test_a_papers_tldr_round_trips_and_survives_a_merging_save(store: Store) -> None:
    summary = 'A one-line summary with ünïcode, $a<b$ and "quotes".'
    assert store.save_papers([paper("2401.00001", 1, tldr=summary)], now=NOW).new == 1
    assert store.papers_by_id(["2401.00001"])["2401.00001"].tldr == summary
    seen = store.papers_seen_between(NOW - timedelta(seconds=1), NOW)
    assert [p.tldr for p in seen] == [summary]
    store.sync_subscribers([subscriber("a@x.test")], now=NOW)
    row = plan(store, sub_id(store, "a@x.test"), "d1", ["2401.00001"])
    assert row is not None
    assert store.load_delivery(row).items[0].paper.tldr == summary  # the Core row path
    later = NOW + timedelta(hours=1)
    arxiv = paper("2401.00001", 2, abstract="revised")  # a source without a summary
    stats = store.save_papers(
        [arxiv], now=later, merge=lambda stored: merge_batch(stored, [arxiv], source="arxiv")
    )
    assert stats.updated == 1
    stored = store.papers_by_id(["2401.00001"])["2401.00001"]
    assert (stored.version, stored.abstract, stored.tldr) == (2, "revised", summary)
    store.save_papers([paper("2401.00002")], now=later)
    assert store.papers_by_id(["2401.00002"])["2401.00002"].tldr is None


def test_papers_seen_between_is_half_open_and_ordered(store: Store) -> None:
    store.save_papers([paper("b")], now=NOW)
    store.save_papers([paper("a")], now=NOW)
    store.save_papers([paper("c")], now=NOW + timedelta(hours=1))
    ids = [
        p.id
        for p in store.papers_seen_between(NOW - timedelta(seconds=1), NOW + timedelta(hours=1))
    ]
    assert ids == ["a", "b", "c"]
    assert [p.id for p in store.papers_seen_between(NOW, NOW + timedelta(hours=1))] == ["c"]


def test_unsubscribe_wins_over_config_until_resubscribe(store: Store) -> None:
    store.sync_subscribers([subscriber("a@x.test"), subscriber("b@x.test")], now=NOW)
    assert store.unsubscribe("a@x.test", now=NOW) is True
    assert store.unsubscribe("a@x.test", now=NOW) is False  # idempotent
    stats = store.sync_subscribers([subscriber("a@x.test")], now=NOW)
    assert (stats.suppressed, stats.removed) == (1, 1)
    states = store.subscriber_states()
    assert states["a@x.test"].status == "unsubscribed"
    assert states["b@x.test"].status == "removed"
    assert store.resubscribe("a@x.test", now=NOW) is True
    store.sync_subscribers([subscriber("a@x.test"), subscriber("b@x.test")], now=NOW)
    assert {e: s.status for e, s in store.subscriber_states().items()} == {
        "a@x.test": "active",
        "b@x.test": "active",
    }


def test_one_outbox_row_per_period(store: Store) -> None:
    store.sync_subscribers([subscriber("a@x.test")], now=NOW)
    sid = sub_id(store, "a@x.test")
    store.save_papers([paper("p1"), paper("p2")], now=NOW)
    first = plan(store, sid, "2026-11-23", ["p1"])
    assert first is not None
    assert plan(store, sid, "2026-11-23", ["p2"]) is None
    assert store.periods_present({(sid, "2026-11-23"), (sid, "2026-11-24")}) == {
        (sid, "2026-11-23")
    }


def test_a_paper_is_reserved_once_per_subscriber(store: Store) -> None:
    store.sync_subscribers([subscriber("a@x.test")], now=NOW)
    sid = sub_id(store, "a@x.test")
    store.save_papers([paper("p1"), paper("p2")], now=NOW)
    plan(store, sid, "d1", ["p1"])
    second = plan(store, sid, "d2", ["p1", "p2"])
    assert second is not None
    assert [i.paper.id for i in store.load_delivery(second).items] == ["p2"]
    assert store.reserved_papers([sid], ["p1", "p2", "p3"]) == {sid: {"p1", "p2"}}


def test_claim_mark_and_failure_releases_papers(store: Store) -> None:
    store.sync_subscribers([subscriber("a@x.test")], now=NOW)
    sid = sub_id(store, "a@x.test")
    store.save_papers([paper("p1")], now=NOW)
    did = plan(store, sid, "d1", ["p1"])
    assert did is not None
    assert store.claim(limit=10, holder="h", now=NOW) == [did]
    assert store.claim(limit=10, holder="h2", now=NOW) == []
    store.mark_sending(did, holder="h", now=NOW)
    store.mark_failed(did, error="550 no such user", now=NOW)
    assert store.outbox_counts() == {"failed": 1}
    assert store.reserved_papers([sid], ["p1"]) == {}
    assert store.last_window_ends([sid]) == {}  # a failed window is not covered


def test_deferred_rows_come_back_when_due(store: Store) -> None:
    store.sync_subscribers([subscriber("a@x.test")], now=NOW)
    did = plan(store, sub_id(store, "a@x.test"), "d1", [])
    assert did is not None
    store.claim(limit=1, holder="h", now=NOW)
    store.mark_sending(did, holder="h", now=NOW)
    store.mark_deferred(did, error="451 try later", retry_at=NOW + timedelta(minutes=5), now=NOW)
    assert store.claim(limit=1, holder="h", now=NOW + timedelta(minutes=4)) == []
    assert store.claim(limit=1, holder="h", now=NOW + timedelta(minutes=5)) == [did]
    assert store.load_delivery(did).attempts == 1


def test_claim_cancels_rows_of_unsubscribed_readers(store: Store) -> None:
    store.sync_subscribers([subscriber("a@x.test")], now=NOW)
    sid = sub_id(store, "a@x.test")
    store.save_papers([paper("p1")], now=NOW)
    plan(store, sid, "d1", ["p1"])
    store.unsubscribe("a@x.test", now=NOW)
    assert store.claim(limit=10, holder="h", now=NOW) == []
    assert store.outbox_counts() == {"cancelled": 1}
    assert store.reserved_papers([sid], ["p1"]) == {}


def test_recover_stale_claims(store: Store) -> None:
    store.sync_subscribers([subscriber("a@x.test"), subscriber("b@x.test")], now=NOW)
    a = plan(store, sub_id(store, "a@x.test"), "d1", [])
    b = plan(store, sub_id(store, "b@x.test"), "d1", [])
    assert store.claim(limit=10, holder="dead", now=NOW) == [a, b]
    assert b is not None
    store.mark_sending(b, holder="dead", now=NOW)
    later = NOW + timedelta(minutes=11)
    reclaimed, stuck = store.recover_stale(now=later, older_than=timedelta(minutes=10))
    assert (reclaimed, stuck) == (1, [b])
    assert store.claim(limit=10, holder="alive", now=later) == [a]


def test_a_claimed_batch_loads_as_each_row_alone(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``load_deliveries`` (Core, a batch at a time) gives what one row at a time gives, and
    what was planned: readers, items in rank order, papers equal to the ORM-read ones and
    shared between readers as one object. A chunk of 2 exercises the chunk boundaries."""
    monkeypatch.setattr(deliveries, "_CHUNK", 2)
    store.sync_subscribers([subscriber(f"{n}@x.test") for n in "abc"], now=NOW)
    store.save_papers(
        [paper(f"p{i}", 1, authors=("A", "B"), categories=("cs.LG", "cs.CL")) for i in range(6)],
        now=NOW,
    )
    planned = {"a": ["p3", "p1", "p0"], "b": ["p1", "p4"], "c": []}
    ids = {n: plan(store, sub_id(store, f"{n}@x.test"), "d1", planned[n]) for n in planned}
    assert store.claim(limit=10, holder="h", now=NOW) == list(ids.values())
    batch = store.load_deliveries([*ids.values(), 999_999])
    assert sorted(batch) == sorted(ids.values())  # unknown ids are left out
    reference = store.papers_by_id([f"p{i}" for i in range(6)])
    for n, did in ids.items():
        assert did is not None
        delivery = batch[did]
        assert delivery == store.load_delivery(did)
        assert (delivery.email, delivery.status, delivery.attempts) == (f"{n}@x.test", "claimed", 0)
        assert (delivery.window_start, delivery.window_end) == (NOW - timedelta(days=1), NOW)
        assert delivery.created_at == NOW and delivery.window_end.tzinfo is not None
        assert [i.paper for i in delivery.items] == [reference[p] for p in planned[n]]
        assert [i.reason for i in delivery.items] == [f"reason {p}" for p in planned[n]]
    a, b = ids["a"], ids["b"]
    assert a is not None and b is not None
    assert batch[a].items[1].paper is batch[b].items[0].paper  # p1, built once per batch
    with pytest.raises(KeyError):
        store.load_delivery(999_999)


def test_papers_are_reused_across_batches_until_their_row_changes(store: Store) -> None:
    """A sender passes one paper cache for its run: an unchanged paper is the same object
    in the next batch; one changed in between (a new upvote count) is read again."""
    store.sync_subscribers([subscriber("a@x.test"), subscriber("b@x.test")], now=NOW)
    store.save_papers([paper("p1"), paper("p2")], now=NOW)
    a = plan(store, sub_id(store, "a@x.test"), "d1", ["p1", "p2"])
    b = plan(store, sub_id(store, "b@x.test"), "d1", ["p1", "p2"])
    assert a is not None and b is not None
    cache: PaperCache = {}
    first = store.load_deliveries([a], papers=cache)[a]
    assert set(cache) == {"p1", "p2"}
    store.save_papers([paper("p1"), paper("p2", upvotes=42)], now=NOW + timedelta(minutes=1))
    second = store.load_deliveries([b], papers=cache)[b]
    assert second.items[0].paper is first.items[0].paper  # p1 unchanged: not rebuilt
    assert second.items[1].paper.upvotes == 42 and first.items[1].paper.upvotes is None
    assert second == store.load_delivery(b)  # what a cold load gives


TRANSITIONS = {
    # mark -> (states it leaves from, state it leads to)
    "sending": ({"claimed"}, "sending"),
    "sent": ({"sending"}, "sent"),
    "deferred": ({"claimed", "sending"}, "deferred"),
    "ambiguous": ({"sending"}, "ambiguous"),
}


def test_marks_only_move_rows_from_their_states(store: Store) -> None:
    """Each guarded mark moves a row only from the states it leaves from; from any other
    state it writes nothing and says so."""

    def mark(name: str, did: int) -> bool:
        if name == "sending":
            return store.mark_sending(did, holder="h", now=NOW)
        if name == "sent":
            return store.mark_sent(did, reply="250 2.0.0 ok", now=NOW)
        if name == "deferred":
            later = NOW + timedelta(hours=1)
            return store.mark_deferred(did, error="451 later", retry_at=later, now=NOW)
        return store.mark_ambiguous(did, error="dropped after DATA", now=NOW)

    paths = {  # how a row reaches each starting state, through the same API
        "pending": [],
        "claimed": ["claim"],
        "sending": ["claim", "sending"],
        "sent": ["claim", "sending", "sent"],
        "deferred": ["claim", "sending", "deferred"],
        "ambiguous": ["claim", "sending", "ambiguous"],
    }
    for n, (start, path) in enumerate(
        (start, path) for start, path in paths.items() for _ in TRANSITIONS
    ):
        email = f"r{n}@x.test"
        store.sync_subscribers([subscriber(email)], now=NOW)
        sid = sub_id(store, email)
        did = plan(store, sid, "d1", [])
        assert did is not None
        for step in path:
            if step == "claim":
                assert store.claim(limit=1000, holder="h", now=NOW)
            else:
                assert mark(step, did)
        name = list(TRANSITIONS)[n % len(TRANSITIONS)]
        sources, target = TRANSITIONS[name]
        before = store.load_delivery(did)
        assert before.status == start
        moved = mark(name, did)
        after = store.load_delivery(did)
        assert moved == (start in sources), (name, start)
        assert after.status == (target if moved else start), (name, start)
        if not moved:
            assert after == before
    # The claims above took every row planned so far; the counts add up.
    assert sum(store.outbox_counts().values()) == len(paths) * len(TRANSITIONS)


def test_concurrent_claims_are_disjoint(db_url: str) -> None:
    first = Store.open(db_url, auto_upgrade=True)
    subs = [subscriber(f"r{i}@x.test") for i in range(60)]
    first.sync_subscribers(subs, now=NOW)
    for s in subs:
        plan(first, sub_id(first, s.email), "d1", [])
    stores = [first, *(Store.open(db_url) for _ in range(3))]
    claimed: list[list[int]] = [[] for _ in stores]
    barrier = threading.Barrier(len(stores))

    def worker(i: int) -> None:
        barrier.wait()
        while ids := stores[i].claim(limit=5, holder=f"w{i}", now=NOW):
            claimed[i].extend(ids)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(stores))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [i for ids in claimed for i in ids]
    assert len(every) == 60
    assert len(set(every)) == 60
    for s in stores:
        s.close()


def test_lease_excludes_others_until_expiry(store: Store) -> None:
    ttl = timedelta(seconds=30)
    assert store.acquire_lease("scheduler", "one", ttl=ttl, now=NOW)
    assert not store.acquire_lease("scheduler", "two", ttl=ttl, now=NOW + timedelta(seconds=10))
    assert store.acquire_lease("scheduler", "one", ttl=ttl, now=NOW + timedelta(seconds=20))
    assert store.lease_holder("scheduler", now=NOW + timedelta(seconds=40)) == "one"
    assert store.acquire_lease("scheduler", "two", ttl=ttl, now=NOW + timedelta(seconds=51))
    store.release_lease("scheduler", "two")
    assert store.lease_holder("scheduler", now=NOW + timedelta(seconds=52)) is None


def test_feedback_latest_signal_wins(store: Store) -> None:
    store.sync_subscribers([subscriber("a@x.test")], now=NOW)
    sid = sub_id(store, "a@x.test")
    assert store.record_feedback("a@x.test", "p1", "more", now=NOW)
    assert store.record_feedback("a@x.test", "p2", "less", now=NOW)
    assert store.record_feedback("a@x.test", "p1", "less", now=NOW + timedelta(seconds=1))
    assert not store.record_feedback("nobody@x.test", "p1", "more", now=NOW)
    assert store.feedback([sid]) == {sid: ([], ["p2", "p1"])}
    with pytest.raises(ValueError, match="'more' or 'less'"):
        store.record_feedback("a@x.test", "p1", "meh", now=NOW)


def test_feedback_pressed_many_times_at_once_records_one_row(store: Store) -> None:
    # A double-click (or two tabs) sends concurrent POSTs for the same paper: each must
    # succeed, not fail on the unique key, and exactly one row must remain.
    store.sync_subscribers([subscriber("a@x.test")], now=NOW)
    sid = sub_id(store, "a@x.test")
    barrier = threading.Barrier(6)

    def press(n: int) -> bool:
        barrier.wait()
        return store.record_feedback("a@x.test", "p1", "more", now=NOW + timedelta(seconds=n))

    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(press, range(6)))
    assert results == [True] * 6
    assert store.feedback([sid]) == {sid: (["p1"], [])}


def test_only_the_current_claim_holder_may_start_sending(store: Store) -> None:
    # Sender "slow" stalls past the stale-claim limit; recovery returns its row to the queue
    # and "fresh" claims it. When "slow" wakes up, it must not start the exchange.
    store.sync_subscribers([subscriber("a@x.test")], now=NOW)
    did = plan(store, sub_id(store, "a@x.test"), "d1", [])
    assert store.claim(limit=1, holder="slow", now=NOW) == [did]
    later = NOW + timedelta(minutes=11)
    assert store.recover_stale(now=later, older_than=timedelta(minutes=10)) == (1, [])
    assert store.claim(limit=1, holder="fresh", now=later) == [did]
    assert not store.mark_sending(did, holder="slow", now=later)
    assert store.load_delivery(did).status == "claimed"
    assert store.mark_sending(did, holder="fresh", now=later)
    assert store.load_delivery(did).status == "sending"
