"""The term a reader's own examples teach (pipeline.match.feedback): "more" presses on a
category's cross-lists bring the cross-lists up, "less" presses push look-alikes down,
a reader without examples sees no change, it orders but never admits, pressed papers
never come back, and explain names it."""

from __future__ import annotations

from dataclasses import replace

import pytest

from pipeline.cycle.plan import profile_with_feedback
from pipeline.domain import Paper, Profile
from pipeline.match import Matcher, MatchSettings, format_decision
from pipeline.match.feedback import PRIOR

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


# the pressed papers' own topics, shared with no paper of today: their words do not
# favour either kind of today's papers, so what moves them is the learned term
ELSEWHERE = [
    "optical flow in video",
    "protein folding kinetics",
    "graph colouring heuristics",
    "solar wind turbulence",
    "robot grasp planning",
    "compiler register allocation",
]


def _paper(pid: str, k: int, categories: tuple[str, ...], topics: list[str] = TOPICS) -> Paper:
    topic = topics[k % len(topics)]
    return Paper(
        pid,
        f"A study of {topic}",
        f"We describe a corpus and a model for {topic}, with an evaluation on {k + 3} sets.",
        categories=categories,
    )


# Today's papers: the lowest ids are cs.CL only, so an unlearned order starts with them.
TODAY = [_paper(f"2502.{k:05d}", k, ("cs.CL",)) for k in range(1, 7)] + [
    _paper(f"2502.{k:05d}", k, ("cs.CL", "cs.LG")) for k in range(7, 13)
]
# Yesterday's papers the reader pressed on (not in today's period: their metadata
# reaches the matcher as ``liked``, as the planner passes it).
PAST = [_paper(f"2501.{k:05d}", k, ("cs.CL", "cs.LG"), ELSEWHERE) for k in range(1, 4)] + [
    _paper(f"2501.{k:05d}", k, ("cs.CL",), ELSEWHERE) for k in range(4, 7)
]
MORE = ("2501.00001", "2501.00002", "2501.00003")  # cross-listed to cs.LG
LESS = ("2501.00004", "2501.00005", "2501.00006")  # cs.CL only
CROSS = {p.id for p in TODAY if "cs.LG" in p.categories}
BASE = Profile(categories=("cs.CL",), max_items=6)


@pytest.fixture(scope="module")
def matcher() -> Matcher:
    return Matcher.fit(PAST + TODAY, MatchSettings(min_df=1))


def _ids(items: list) -> list[str]:  # type: ignore[type-arg]
    return [i.paper_id for i in items]


def _liked() -> dict[str, Paper]:
    return {p.id: p for p in PAST}


def test_more_and_less_presses_bring_the_wanted_cross_lists_up(matcher: Matcher) -> None:
    before = _ids(matcher.match([BASE], TODAY)[0])
    assert not set(before) <= CROSS  # without presses the digest mixes both kinds
    learned = profile_with_feedback(BASE, MORE, LESS)
    [items] = matcher.match([learned], TODAY, liked=_liked())
    assert set(_ids(items)) == CROSS


def test_the_term_needs_the_papers_metadata_and_unknown_ids_count_for_nothing(
    matcher: Matcher,
) -> None:
    # without ``liked`` the pressed papers (not in the period) have no known categories
    unknown = profile_with_feedback(BASE, ("9999.99999",), ())
    plain = matcher.match([BASE], TODAY)[0]
    assert _ids(matcher.match([unknown], TODAY, liked=_liked())[0]) == _ids(plain)
    decision = matcher.decide(unknown, TODAY, "2502.00007", liked=_liked())
    assert all(p.kind != "feedback" for p in decision.ranking)


def test_less_presses_alone_push_look_alikes_down(matcher: Matcher) -> None:
    less_only = profile_with_feedback(BASE, (), LESS)
    settings_off = replace(matcher.settings, rank_feedback=0.0)
    off = Matcher.fit(PAST + TODAY, settings_off)
    with_term = matcher.decide(less_only, TODAY, "2502.00001", liked=_liked())
    without = off.decide(less_only, TODAY, "2502.00001", liked=_liked())
    [part] = [p for p in with_term.ranking if p.kind == "feedback"]
    # a = −3 / (3 + PRIOR) on cs.CL, the paper's only category
    assert part.value == pytest.approx(-3 / (3 + PRIOR), abs=1e-6)
    assert with_term.score == pytest.approx(without.score + part.contribution, abs=1e-5)
    assert with_term.score < without.score


def test_a_reader_with_no_examples_sees_no_change(matcher: Matcher) -> None:
    off = Matcher.fit(PAST + TODAY, replace(matcher.settings, rank_feedback=0.0))
    profiles = [BASE, Profile(query="corpus", max_items=5), Profile(about="legal translation")]
    got = matcher.match(profiles, TODAY, liked=_liked())
    want = off.match(profiles, TODAY, liked=_liked())
    assert [[(i.paper_id, i.score) for i in items] for items in got] == [
        [(i.paper_id, i.score) for i in items] for items in want
    ]
    # and a reader with examples beside them in the same call changes only themself
    mixed = matcher.match([BASE, profile_with_feedback(BASE, MORE, LESS)], TODAY, liked=_liked())
    assert _ids(mixed[0]) == _ids(got[0])


def test_the_term_orders_but_never_admits(matcher: Matcher) -> None:
    # a cs.LG-only paper shares the liked category but not the reader's rule: with
    # similarity admission closed, it stays out however strongly the category is liked
    outsider = _paper("2502.00099", 2, ("cs.LG",))
    strict = Matcher.fit(PAST + TODAY, replace(matcher.settings, similarity_threshold=0.99))
    learned = profile_with_feedback(BASE, MORE, ())
    [items] = strict.match([replace(learned, max_items=20)], [*TODAY, outsider], liked=_liked())
    assert "2502.00099" not in _ids(items)
    decision = strict.decide(learned, [*TODAY, outsider], "2502.00099", liked=_liked())
    assert decision.why_not == "below_threshold"
    assert decision.ranking == ()


def test_pressed_papers_never_come_back(matcher: Matcher) -> None:
    pressed = profile_with_feedback(replace(BASE, max_items=20), ("2502.00007",), ("2502.00001",))
    [items] = matcher.match([pressed], TODAY, liked=_liked())
    assert {"2502.00007", "2502.00001"}.isdisjoint(_ids(items))
    assert len(items) >= len(CROSS)  # the rest of the category still fills the digest
    decision = matcher.decide(pressed, TODAY, "2502.00007", liked=_liked())
    assert decision.why_not == "own_feedback"


def test_explain_names_the_learned_categories(matcher: Matcher) -> None:
    learned = profile_with_feedback(BASE, MORE, LESS)
    decision = matcher.decide(learned, TODAY, "2502.00008", liked=_liked())
    [part] = [p for p in decision.ranking if p.kind == "feedback"]
    # cs.CL: (3 − 3) / 8 = 0 moves nothing; cs.LG: 3 / 8
    assert part.value == pytest.approx(3 / (6 + PRIOR), abs=1e-6)
    assert part.weight == matcher.settings.rank_feedback
    text = format_decision(decision)
    assert "feedback" in text and "cs.LG +0.38" in text
    assert decision.rank is not None and decision.rank <= len(CROSS)


def test_rank_feedback_is_validated() -> None:
    with pytest.raises(ValueError, match="rank_feedback"):
        MatchSettings(rank_feedback=1.5)
