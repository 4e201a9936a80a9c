"""The co-reader ranking term (pipeline.match.coreaders) from a real store: what other
readers pressed "more"/"less" on reorders a reader's admitted papers, never admits one,
needs two other pressers, leaves the reader's own presses out, shows in explain, is off
with ``without_ranking()``, breaks ties deterministically, and reaches the matcher as
counts per call (not through the fitted matcher)."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, time, timedelta
from pathlib import Path

import pytest

from pipeline.cycle.plan import MatchInputs, PlanSettings, fit_digest, match_inputs
from pipeline.domain import Paper, Profile, Reader, Schedule, Subscriber
from pipeline.match import MatchSettings, format_decision
from pipeline.match.coreaders import COREADERS_FULL, MIN_PRESSERS
from pipeline.store import Store

NOW = datetime(2026, 12, 3, 6, 0, tzinfo=UTC)
SEEN = NOW - timedelta(hours=3)  # today's papers were first seen then

TOPICS = [
    "parsing of long sentences",
    "machine translation of legal text",
    "summarisation of news articles",
    "question answering over tables",
    "speech transcripts and dialogue",
    "named entity recognition in biology",
    "sentiment of product reviews",
    "morphology of rare languages",
]


def _paper(pid: str, k: int, categories: tuple[str, ...] = ("cs.CL",)) -> Paper:
    topic = TOPICS[k % len(TOPICS)]
    return Paper(
        pid,
        f"A study of {topic}",
        f"We describe a corpus and a model for {topic}, with an evaluation on {k + 3} sets.",
        categories=categories,
    )


TODAY = [_paper(f"2512.{k:05d}", k) for k in range(1, 9)]
OTHER_FIELD = _paper("2512.00099", 3, ("cs.CV",))  # no cs.CL reader's rules admit it
PAPERS = [*TODAY, OTHER_FIELD]
READERS = ("ann", "bob", "cat", "dan", "eve")  # every one follows cs.CL
MATCH = MatchSettings(min_df=1, threads=1)


def _settings(match: MatchSettings = MATCH) -> PlanSettings:
    return PlanSettings(
        first_digest_days=1,
        max_window_days=14,
        corpus_days=60,
        match=match,
        message_domain="paperpost.example",
    )


def _email(name: str) -> str:
    return f"{name}@x.test"


def _open(url: str) -> Store:
    """A store with the five cs.CL readers and today's papers."""
    s = Store.open(url, auto_upgrade=True)
    s.sync_subscribers(
        [
            Subscriber(
                email=_email(name),
                name=None,
                schedule=Schedule("daily", time(8), "UTC"),
                profile=Profile(categories=("cs.CL",), max_items=3),
            )
            for name in READERS
        ],
        now=NOW - timedelta(days=2),
    )
    s.save_papers(PAPERS, now=SEEN)
    return s


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = _open(f"sqlite:///{tmp_path / 'paperpost.db'}")
    yield s
    s.close()


def _press(store: Store, names: str, paper_id: str, signal: str = "more") -> None:
    for name in names.split():
        assert store.record_feedback(_email(name), paper_id, signal, now=NOW - timedelta(hours=1))


def _reader(store: Store, name: str) -> Reader:
    reader = store.reader_by_email(_email(name))
    assert reader is not None
    return reader


def _inputs(store: Store, name: str, match: MatchSettings = MATCH) -> MatchInputs:
    return match_inputs(store, _settings(match), [_reader(store, name)], now=NOW)


def _digest(
    store: Store, name: str, match: MatchSettings = MATCH, *, counts: bool = True
) -> list[str]:
    """The reader's next digest as planning makes it (``match_inputs``, then one call)."""
    inputs = _inputs(store, name, match)
    rid = _reader(store, name).id
    [items] = inputs.matcher.match(
        [inputs.profiles[rid]],
        inputs.window(rid),
        exclude_ids=[inputs.reserved.get(rid, set())],
        liked=inputs.liked,
        coreaders=inputs.coreaders if counts else None,
    )
    return [i.paper_id for i in items]


def _explain(store: Store, name: str, paper_id: str, match: MatchSettings = MATCH) -> str:
    inputs = _inputs(store, name, match)
    rid = _reader(store, name).id
    decision = inputs.matcher.decide(
        inputs.profiles[rid],
        inputs.window(rid),
        paper_id,
        exclude_ids=inputs.reserved.get(rid, set()),
        liked=inputs.liked,
        coreaders=inputs.coreaders,
    )
    return format_decision(decision)


def _last(store: Store, name: str) -> str:
    """The cs.CL paper the reader's unpressed order ranks last (the term has most to move)."""
    inputs = _inputs(store, name)
    rid = _reader(store, name).id
    [items] = inputs.matcher.match(
        [replace(inputs.profiles[rid], max_items=len(PAPERS))], inputs.window(rid)
    )
    ranked = [i.paper_id for i in items]
    assert sorted(ranked) == sorted(p.id for p in TODAY)
    return ranked[-1]


def test_the_store_counts_distinct_active_pressers_per_paper(db_url: str) -> None:
    store = _open(db_url)
    try:
        _counts(store)
    finally:
        store.close()


def _counts(store: Store) -> None:
    target, other = TODAY[0].id, TODAY[1].id
    _press(store, "ann bob cat", target)
    _press(store, "dan", target, "less")
    _press(store, "ann", other, "more")
    _press(store, "ann", other, "less")  # the latest signal of a reader wins
    _press(store, "eve", "2401.00001")  # a paper outside the asked ids
    assert store.coreader_counts([target, other, TODAY[2].id]) == {
        target: (3, 1),
        other: (0, 1),
    }
    # a reader who left no longer counts
    assert store.unsubscribe(_email("bob"), now=NOW)
    assert store.coreader_counts([target]) == {target: (2, 1)}
    # many ids: chunked IN lists give the same answer
    many = [f"2512.{k:05d}" for k in range(12_000)] + [target]
    assert store.coreader_counts(many) == {target: (2, 1), other: (0, 1)}


def test_two_other_readers_asking_for_more_move_a_paper_to_the_top(store: Store) -> None:
    target = _last(store, "cat")
    before = _digest(store, "cat")
    assert target not in before
    _press(store, "ann bob", target)
    after = _digest(store, "cat")
    assert after[0] == target
    assert after[1:] == before[:2]  # the rest keeps its order
    assert _inputs(store, "cat").coreaders == {target: (2, 0)}  # counts only reach it


def test_one_other_presser_moves_nothing(store: Store) -> None:
    assert MIN_PRESSERS == 2
    target = _last(store, "cat")
    before = _digest(store, "cat")
    _press(store, "ann", target)
    assert _digest(store, "cat") == before
    assert "coreaders" not in _explain(store, "cat", target)
    # two pressers whose "more" and "less" cancel move nothing either
    _press(store, "bob", target, "less")
    assert _digest(store, "cat") == before
    # a third asking for more: net 1 with three pressers moves it
    _press(store, "dan", target)
    assert _digest(store, "cat")[0] == target


def test_less_presses_offset_more_presses(store: Store) -> None:
    up, down = _last(store, "eve"), None
    _press(store, "ann bob cat", up)
    digest = _digest(store, "eve")
    assert digest[0] == up
    for paper in TODAY:  # another paper with the same "more" presses and two "less"
        if paper.id != up:
            down = paper.id
            break
    assert down is not None
    _press(store, "ann bob cat", down)
    _press(store, "dan", down, "less")
    text = _explain(store, "eve", down)
    assert "3 other readers asked for more like this, 1 for less" in text
    ranked = _digest(store, "eve", replace(MATCH, rank_category_typical=0.0))
    assert ranked.index(up) < ranked.index(down)  # net 3 above net 2


def test_more_less_than_more_presses_push_nothing_down(store: Store) -> None:
    # the value is in [0, 1]: "less" presses only offset "more" presses
    wide = replace(MATCH, rank_category_typical=0.0)
    before = _digest(store, "eve", wide)
    _press(store, "ann", before[0])
    _press(store, "bob cat dan", before[0], "less")
    _press(store, "ann bob cat dan", before[1], "less")
    assert store.coreader_counts(before[:2]) == {before[0]: (1, 3), before[1]: (0, 4)}
    assert _digest(store, "eve", wide) == before
    assert "coreaders" not in _explain(store, "eve", before[0], wide)


def test_it_never_admits_a_paper_the_reader_s_rules_do_not(store: Store) -> None:
    _press(store, "ann bob dan eve", OTHER_FIELD.id)
    assert store.coreader_counts([OTHER_FIELD.id]) == {OTHER_FIELD.id: (4, 0)}
    inputs = _inputs(store, "cat")
    rid = _reader(store, "cat").id
    [items] = inputs.matcher.match(  # room for every paper the reader's rules admit
        [replace(inputs.profiles[rid], max_items=len(PAPERS))],
        inputs.window(rid),
        coreaders=inputs.coreaders,
    )
    assert OTHER_FIELD.id not in [i.paper_id for i in items]
    text = _explain(store, "cat", OTHER_FIELD.id)
    assert "not admitted" in text
    assert "asked for more" not in text


def test_the_reader_s_own_presses_are_not_counted_for_them(store: Store) -> None:
    target = _last(store, "ann")
    _press(store, "ann bob", target)
    # for ann the paper is her own example: never sent back, no co-reader term
    assert target not in _digest(store, "ann")
    text = _explain(store, "ann", target)
    assert "never sent back" in text
    assert "asked for more" not in text
    # for bob, too (his own press; only ann's is another reader's: one is not enough)
    assert target not in _digest(store, "bob")
    # for cat both are other readers
    assert _digest(store, "cat")[0] == target
    assert "2 other readers asked for more like this" in _explain(store, "cat", target)


def test_explain_shows_the_term_that_moved_a_paper(store: Store) -> None:
    target = _last(store, "dan")
    _press(store, "ann bob cat", target)
    text = _explain(store, "dan", target)
    line = next(row for row in text.splitlines() if "coreaders" in row)
    assert "3 other readers asked for more like this" in line
    assert f"× {MATCH.rank_coreaders:.2f}" in line
    assert "selected: interest item 1" in text
    # the value: log(1 + 3) / log(1 + COREADERS_FULL)
    inputs = _inputs(store, "dan")
    rid = _reader(store, "dan").id
    decision = inputs.matcher.decide(
        inputs.profiles[rid], inputs.window(rid), target, coreaders=inputs.coreaders
    )
    [part] = [p for p in decision.ranking if p.kind == "coreaders"]
    assert part.value == pytest.approx(math.log1p(3) / math.log1p(COREADERS_FULL), rel=1e-6)
    assert part.weight == MATCH.rank_coreaders


def test_without_ranking_the_term_is_zero(store: Store) -> None:
    off = MATCH.without_ranking()
    assert off.rank_coreaders == 0.0
    target = _last(store, "cat")
    before = _digest(store, "cat", off)
    _press(store, "ann bob dan eve", target)
    assert _digest(store, "cat", off) == before
    assert "asked for more" not in _explain(store, "cat", target, off)


def test_equal_counts_tie_in_the_period_s_order_whatever_the_input_order(store: Store) -> None:
    # with the co-reader term the only ranking term, two papers with the same presses tie
    only = replace(MATCH.without_ranking(), rank_coreaders=MATCH.rank_coreaders)
    a, b = TODAY[6].id, TODAY[4].id  # b < a
    _press(store, "ann bob", a)
    _press(store, "ann bob", b)
    inputs = _inputs(store, "cat", only)
    rid = _reader(store, "cat").id
    window = inputs.window(rid)
    orders = []
    for seed in range(4):
        papers = list(window)
        random.Random(seed).shuffle(papers)
        counts = dict(sorted(inputs.coreaders.items(), reverse=bool(seed % 2)))
        [items] = inputs.matcher.match([inputs.profiles[rid]], papers, coreaders=counts)
        orders.append([(i.paper_id, i.score) for i in items])
    assert all(order == orders[0] for order in orders)
    (first, s1), (second, s2), _ = orders[0]
    assert (first, second) == (b, a)
    assert s1 == s2


def test_presses_during_a_tick_change_the_counts_not_the_fitted_matcher(store: Store) -> None:
    settings = _settings()
    corpus = store.papers_seen_between(NOW - timedelta(days=60), NOW)
    digest = fit_digest(corpus, settings)
    reader = _reader(store, "cat")
    first = match_inputs(store, settings, [reader], now=NOW)
    target = _last(store, "cat")
    _press(store, "ann bob", target)
    # the worker's check reads the same fit inputs; the next call reads the new counts
    assert fit_digest(store.papers_seen_between(NOW - timedelta(days=60), NOW), settings) == digest
    second = match_inputs(store, settings, [reader], now=NOW, matcher=first.matcher)
    assert first.coreaders == {}
    assert second.coreaders == {target: (2, 0)}
    [items] = second.matcher.match(
        [second.profiles[reader.id]], second.window(reader.id), coreaders=second.coreaders
    )
    assert items[0].paper_id == target
