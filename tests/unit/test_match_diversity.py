"""Diversity (pipeline.match.diversity): a look-alike of a better-ranked candidate moves
down by how alike it is, the better one keeps its place, nothing is admitted or
removed, an already-sent paper does not count, and explain names the look-alike."""

from __future__ import annotations

from dataclasses import replace

import pytest

from pipeline.domain import Paper, Profile
from pipeline.match import Matcher, MatchSettings, format_decision

ABSTRACT = (
    "We train a reward model for preference optimization of language models and show"
    " that reward model ensembles reduce reward hacking."
)
PAPERS = [
    Paper("2503.00001", "Reward model ensembles", ABSTRACT, categories=("cs.LG",)),
    # the same paper again, a word changed: a near-duplicate
    Paper("2503.00002", "Reward model ensembles, revisited", ABSTRACT, categories=("cs.LG",)),
    Paper(
        "2503.00003",
        "Process reward models for mathematics",
        "A process reward model scores each step of a proof; we study its calibration.",
        categories=("cs.LG",),
    ),
    Paper(
        "2503.00004",
        "Reward shaping in robot navigation",
        "Dense reward signals for navigation policies learned in simulation.",
        categories=("cs.RO",),
    ),
    Paper(
        "2503.00005",
        "Graph neural networks for molecules",
        "Message passing networks predict molecular properties.",
        categories=("cs.LG",),
    ),
]
READER = Profile(query="reward", max_items=10)


@pytest.fixture(scope="module")
def on() -> Matcher:
    return Matcher.fit(PAPERS, MatchSettings(min_df=1, rank_diversity=1.0))


@pytest.fixture(scope="module")
def off() -> Matcher:
    return Matcher.fit(PAPERS, MatchSettings(min_df=1, rank_diversity=0.0))


def _ids(items: list) -> list[str]:  # type: ignore[type-arg]
    return [i.paper_id for i in items]


def test_a_near_duplicate_moves_below_a_different_paper(on: Matcher, off: Matcher) -> None:
    before = _ids(off.match([READER], PAPERS)[0])
    after = _ids(on.match([READER], PAPERS)[0])
    assert before[:2] in (["2503.00001", "2503.00002"], ["2503.00002", "2503.00001"])
    assert after[0] == before[0]  # the better of the two keeps its place
    assert after.index(before[1]) > after.index("2503.00003")
    assert sorted(after) == sorted(before)  # nothing admitted or removed


def test_explain_names_the_better_ranked_look_alike(on: Matcher, off: Matcher) -> None:
    loser = _ids(off.match([READER], PAPERS)[0])[1]
    winner = _ids(off.match([READER], PAPERS)[0])[0]
    decision = on.decide(READER, PAPERS, loser)
    [part] = [p for p in decision.ranking if p.kind == "diversity"]
    assert -1.0 <= part.value < 0 and part.weight == 1.0
    assert winner in part.detail
    plain = off.decide(READER, PAPERS, loser)
    assert decision.score == pytest.approx(plain.score + part.contribution, abs=1e-5)
    assert "diversity" in format_decision(decision)
    # the better-ranked one has no such term
    assert all(p.kind != "diversity" for p in on.decide(READER, PAPERS, winner).ranking)


def test_an_already_sent_paper_does_not_push_its_look_alike_down(on: Matcher, off: Matcher) -> None:
    sent = [{"2503.00001"}]
    got = on.match([READER], PAPERS, exclude_ids=sent)[0]
    want = off.match([READER], PAPERS, exclude_ids=sent)[0]
    assert [(i.paper_id, i.score) for i in got] == [(i.paper_id, i.score) for i in want]


def test_diversity_off_or_unalike_papers_change_nothing(off: Matcher) -> None:
    distinct = [p for p in PAPERS if p.id != "2503.00002"]
    strict = Matcher.fit(PAPERS, MatchSettings(min_df=1, rank_diversity=1.0))
    got = strict.match([READER], distinct)[0]
    want = off.match([READER], distinct)[0]
    assert [(i.paper_id, i.score) for i in got] == [(i.paper_id, i.score) for i in want]


def test_diversity_threshold_is_validated() -> None:
    with pytest.raises(ValueError, match="diversity_threshold"):
        replace(MatchSettings(), diversity_threshold=1.5)
