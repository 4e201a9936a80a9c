"""Ranking terms for hard matches (pipeline.match.ranking): what moves a hit up, that
they order but never admit, that explain shows them, and that a reader's own liked or
disliked papers never come back."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from pipeline.domain import Paper, Profile
from pipeline.match import Matcher, MatchSettings, format_decision
from pipeline.match.taxonomy import describe
from tests.unit.test_match_engine import NEW, UNRANKED, WINDOW

FILLER = "We study learning systems and report experiments on standard benchmarks."


def _paper(pid: str, title: str, abstract: str, **kw: object) -> Paper:
    return Paper(pid, title, abstract, categories=kw.pop("categories", ("cs.LG",)), **kw)  # type: ignore[arg-type]


RLHF = [
    # lowest id: mentions the query once, in passing, in the abstract
    _paper(
        "2501.00001",
        "Scaling laws for vision transformers",
        f"{FILLER} A reward model is used once.",
    ),
    _paper(
        "2501.00002",
        "Reward model ensembles for preference optimization",
        "We train a reward model for preference optimization; the reward model ensemble"
        " reduces reward hacking in preference optimization.",
    ),
    _paper("2501.00003", "Graph neural networks for molecules", f"{FILLER} Molecules."),
    _paper("2501.00004", "Tokenizers for code models", f"{FILLER} Code and preference data."),
]


@pytest.fixture(scope="module")
def fitted() -> Matcher:
    return Matcher.fit(WINDOW + NEW + RLHF, MatchSettings(min_df=1))


@pytest.fixture(scope="module")
def flat() -> Matcher:
    return Matcher.fit(WINDOW + NEW + RLHF, UNRANKED)


def ids(items: list) -> list[str]:  # type: ignore[type-arg]
    return [i.paper_id for i in items]


def test_a_strong_query_match_outranks_a_passing_mention(fitted: Matcher, flat: Matcher) -> None:
    profile = Profile(query='"reward model" OR "preference optimization"')
    [before] = flat.match([profile], RLHF)
    [after] = fitted.match([profile], RLHF)
    assert ids(before)[:2] == ["2501.00001", "2501.00002"]  # equal scores: lowest id first
    assert ids(after)[:2] == ["2501.00002", "2501.00001"]
    assert after[0].score > after[1].score > 1.0  # both still query hits (boost 1.0)


def test_a_title_occurrence_weighs_more_than_an_abstract_one(fitted: Matcher) -> None:
    papers = [
        _paper("2502.00001", "Graph neural networks", f"{FILLER} We use diffusion here."),
        _paper("2502.00002", "Diffusion for graphs", f"{FILLER} Graphs here."),
    ]
    [items] = fitted.match([Profile(query="diffusion")], papers)
    assert ids(items) == ["2502.00002", "2502.00001"]
    bm25 = {
        i.paper_id: next(
            p.value
            for p in fitted.decide(Profile(query="diffusion"), papers, i.paper_id).ranking
            if p.kind == "bm25"
        )
        for i in items
    }
    assert bm25["2502.00002"] > bm25["2502.00001"] > 0


def test_more_query_clauses_hit_rank_higher(fitted: Matcher) -> None:
    profile = Profile(query="abs:reward OR abs:preference OR abs:hacking")
    decision = fitted.decide(profile, RLHF, "2501.00002")
    clauses = {p.kind: p.value for p in decision.ranking}["clauses"]
    assert clauses == pytest.approx(1.0)
    other = fitted.decide(profile, RLHF, "2501.00001")
    assert {p.kind: p.value for p in other.ranking}["clauses"] == pytest.approx(1 / 3)


def test_category_hits_no_longer_tie(fitted: Matcher, flat: Matcher) -> None:
    profile = Profile(categories=("cs.*", "quant-ph"), max_items=20)
    [before] = flat.match([profile], NEW + RLHF)
    [after] = fitted.match([profile], NEW + RLHF)
    assert len({i.score for i in before}) < len(before)  # ties without ranking terms
    assert len({i.score for i in after}) == len(after)  # none with them
    assert set(ids(before)) == set(ids(after))  # the same papers are admitted


def test_ranking_terms_order_but_never_admit(fitted: Matcher, flat: Matcher) -> None:
    for profile in (
        Profile(query="diffusion OR robot", max_items=50),
        Profile(about="tactile robot grasping", max_items=50),
        Profile(categories=("cs.LG",), dislike=("2301.00003",), max_items=50),
    ):
        [a] = fitted.match([profile], NEW + RLHF)
        [b] = flat.match([profile], NEW + RLHF)
        assert set(ids(a)) == set(ids(b)), profile


def test_upvotes_rank_a_hit_higher_and_fade_with_age(fitted: Matcher) -> None:
    now = datetime(2026, 1, 10, tzinfo=UTC)
    base = _paper("2503.00001", "Preference data", "Preference data for reward models.")
    fresh = replace(base, id="2503.00002", upvotes=80, published=now)
    stale = replace(base, id="2503.00003", upvotes=80, published=now - timedelta(days=30))
    papers = [base, fresh, stale]
    [items] = fitted.match([Profile(query="preference")], papers)
    assert ids(items) == ["2503.00002", "2503.00003", "2503.00001"]
    decision = fitted.decide(Profile(query="preference"), papers, "2503.00003")
    [trend] = [p for p in decision.ranking if p.kind == "trending"]
    assert 0 < trend.value < 0.1  # 30 days: about 2^-4 of its fresh value
    assert "30.0 day(s) old" in format_decision(decision)


def test_explain_shows_every_ranking_term(fitted: Matcher) -> None:
    profile = Profile(query='"reward model"', categories=("cs.LG",))
    decision = fitted.decide(profile, RLHF, "2501.00002")
    kinds = [(p.kind, p.rule) for p in decision.ranking]
    assert kinds == [
        ("bm25", "query"),
        ("clauses", "query"),
        ("typical", "query"),
        ("typical", "categories"),
    ]
    assert decision.score == pytest.approx(decision.boost + decision.rank_bonus, abs=1e-5)
    text = format_decision(decision)
    assert f"ranking     +{decision.rank_bonus:.4f}" in text
    assert "bm25 (query)" in text and "× 0.20" in text
    # a paper that is not admitted gets no ranking terms, and explain says so
    out = fitted.decide(Profile(query='"reward model"'), RLHF, "2501.00003")
    assert out.ranking == () and out.why_not == "not_admitted"
    assert "ranking     none (added to eligible papers only)" in format_decision(out)


def test_a_readers_liked_and_disliked_papers_never_come_back(fitted: Matcher) -> None:
    liked = Profile(like=("2501.00002",), query="reward", max_items=10)
    [items] = fitted.match([liked], RLHF)
    assert "2501.00002" not in ids(items)
    assert ids(items)  # its look-alikes still come
    decision = fitted.decide(liked, RLHF, "2501.00002")
    assert (decision.why_not, decision.excluded_by) == ("own_feedback", ("own_feedback",))
    assert "the reader liked or disliked it" in format_decision(decision)
    disliked = Profile(dislike=("2501.00001",), query="reward")
    [items] = fitted.match([disliked], RLHF)
    assert "2501.00001" not in ids(items)
    # another reader of the same call, without that like, still gets the paper
    [mine, theirs] = fitted.match([liked, Profile(query="reward")], RLHF)
    assert "2501.00002" in ids(theirs) and "2501.00002" not in ids(mine)


def test_a_reader_ranks_the_same_alone_and_in_a_batch(fitted: Matcher) -> None:
    profile = Profile(query="diffusion OR preference", categories=("cs.LG",), trending=1)
    others = [Profile(query=q) for q in ("robot", "qubits", "ti:graph", "reward*")]
    [alone] = fitted.match([profile], NEW + RLHF)
    batch = fitted.match([*others, profile, *others], NEW + RLHF)
    assert batch[len(others)] == alone


def test_the_taxonomy_names_categories_and_falls_back_to_the_archive() -> None:
    assert describe("cs.IT") == "Information Theory"
    assert describe("math.XX") == "Mathematics"
    assert describe("nope.ZZ") == "nope.ZZ"
