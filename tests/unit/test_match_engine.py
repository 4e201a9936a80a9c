"""The matcher on small hand-checked corpora: each rule, exclusions, trending, reasons, explain.

The decision record behind ``explain`` is tested in test_match_decision.py.
"""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from pipeline.domain import Paper, Profile
from pipeline.match import Matcher, MatchSettings, format_decision

WINDOW = [
    Paper(
        "2301.00001",
        "Diffusion models for image synthesis",
        "Denoising diffusion probabilistic models generate images from noise.",
        ("Jonathan Ho", "Pieter Abbeel"),
        ("cs.CV", "cs.LG"),
    ),
    Paper(
        "2301.00002",
        "Direct preference optimization of language models",
        "We align language models with human preferences without reinforcement learning.",
        ("Rafael Rafailov", "Chelsea Finn"),
        ("cs.LG", "cs.CL"),
    ),
    Paper(
        "2301.00003",
        "Graph neural networks for molecules",
        "Message passing networks predict molecular properties of graphs.",
        ("Justin Gilmer",),
        ("cs.LG", "q-bio.QM"),
    ),
    Paper(
        "2301.00004",
        "Robot grasping with tactile sensing",
        "A robot arm learns grasping policies from tactile sensors.",
        ("Sergey Levine",),
        ("cs.RO",),
    ),
    Paper(
        "2301.00005",
        "Quantum error correction codes",
        "Surface codes protect logical qubits against noise.",
        ("John Preskill",),
        ("quant-ph",),
    ),
]

NEW = [
    Paper(
        "2401.00010",
        "Latent diffusion models for fast image generation",
        "Diffusion models in a latent space generate high resolution images quickly.",
        ("Robin Rombach", "Björn Ommer"),
        ("cs.CV",),
        upvotes=40,
        announce_type="new",
    ),
    Paper(
        "2401.00011",
        "Preference optimization without a reward model",
        "Language models aligned to human preferences by direct optimisation.",
        ("R. Rafailov", "Archit Sharma"),
        ("cs.CL", "cs.LG"),
        upvotes=12,
        announce_type="new",
    ),
    Paper(
        "2401.00012",
        "Tactile robot grasping policies",
        "Robot arm grasping with tactile sensors and learned policies.",
        ("S. Levine",),
        ("cs.RO", "cs.LG"),
        announce_type="cross",
    ),
    Paper(
        "2401.00013",
        "Logical qubits with surface codes",
        "Quantum error correction protects qubits; surface codes at scale.",
        ("John Preskill",),
        ("quant-ph",),
        upvotes=90,
        announce_type="new",
    ),
    Paper(
        "2401.00014",
        "Message passing graph networks for proteins",
        "Graph neural networks predict protein properties by message passing.",
        ("Justin Gilmer", "Yann LeCun"),
        ("cs.LG",),
        announce_type="replace",
    ),
]


@pytest.fixture(scope="module")
def matcher() -> Matcher:
    return Matcher.fit(WINDOW + NEW, MatchSettings(min_df=1))


UNRANKED = MatchSettings(min_df=1).without_ranking()


@pytest.fixture(scope="module")
def unranked() -> Matcher:
    """The same matcher without ranking terms: every hit of a rule scores the same."""
    return Matcher.fit(WINDOW + NEW, UNRANKED)


def ids(items: list) -> list[str]:  # type: ignore[type-arg]
    return [item.paper_id for item in items]


@pytest.mark.parametrize(
    ("profile", "expected"),
    [
        (Profile(query="ti:diffusion"), ["2401.00010"]),
        (Profile(query="abs:optimization"), ["2401.00011"]),
        (Profile(query='ti:"surface codes" OR au:preskill'), ["2401.00013"]),
        (Profile(categories=("quant-ph",)), ["2401.00013"]),
        (Profile(categories=("cs.R*",)), ["2401.00012"]),
        (Profile(authors=("Sergey Levine",)), ["2401.00012"]),
        (Profile(authors=("LeCun, Yann",)), ["2401.00014"]),
        (Profile(query="cat:cs.LG ANDNOT cat:cs.CL"), ["2401.00012", "2401.00014"]),
        (Profile(categories=("cs.LG",), exclude="au:gilmer"), ["2401.00011", "2401.00012"]),
        (Profile(), []),
    ],
    ids=[
        "query-title",
        "query-stemmed-british",
        "query-or",
        "category",
        "category-wildcard",
        "author-initial",
        "author-comma",
        "query-andnot",
        "exclude-removes",
        "empty-profile",
    ],
)
def test_rules_select_exactly_their_papers(
    matcher: Matcher, profile: Profile, expected: list[str]
) -> None:
    [items] = matcher.match([profile], NEW)
    assert sorted(ids(items)) == expected


def test_similarity_admits_papers_on_its_own(matcher: Matcher) -> None:
    about = Profile(about="tactile robot grasping")
    liked = Profile(like=("2301.00005",))
    items_about, items_liked = matcher.match([about, liked], NEW)
    assert ids(items_about) == ["2401.00012"]
    assert ids(items_liked) == ["2401.00013"]
    assert items_about[0].reason.startswith("close to your about text (")
    assert items_liked[0].reason.startswith("similar to liked 2301.00005 (")


def test_threshold_keeps_dissimilar_papers_out(matcher: Matcher) -> None:
    strict = Matcher.fit(WINDOW + NEW, MatchSettings(min_df=1, similarity_threshold=0.99))
    [items] = strict.match([Profile(like=("2301.00005",))], NEW)
    assert items == []


def test_boosts_rank_rule_hits_above_similarity_only(matcher: Matcher) -> None:
    profile = Profile(about="graph networks message passing robot grasping", authors=("Levine",))
    [items] = matcher.match([profile], NEW)
    assert ids(items)[0] == "2401.00012"
    assert items[0].reason.startswith("by S. Levine; ")
    assert items[0].score > 1.0 > items[1].score


def test_dislike_pushes_similar_papers_down(matcher: Matcher) -> None:
    base = Profile(categories=("cs.LG",), min_score=-10.0)
    disliking = replace(base, dislike=("2301.00003",))
    [plain], [punished] = matcher.match([base], NEW), matcher.match([disliking], NEW)
    score = {i.paper_id: i.score for i in plain}
    lowered = {i.paper_id: i.score for i in punished}
    assert lowered["2401.00014"] < score["2401.00014"]
    assert ids(punished)[-1] == "2401.00014"
    # with the default min_score of 0 the disliked look-alike is dropped
    [default] = matcher.match([replace(disliking, min_score=0.0)], NEW)
    assert "2401.00014" not in ids(default)
    # min_score is compared before the ranking terms (they order, never admit)
    decision = matcher.decide(replace(disliking, min_score=0.0), NEW, "2401.00014")
    assert decision.why_not == "below_min_score" and decision.score < 0


def test_max_items_and_min_score(matcher: Matcher) -> None:
    profile = Profile(categories=("cs.*", "quant-ph"), max_items=2)
    [items] = matcher.match([profile], NEW)
    assert len(items) == 2
    [none] = matcher.match([replace(profile, min_score=5.0)], NEW)
    assert none == []


def test_ties_break_by_announce_type_then_id(unranked: Matcher) -> None:
    [items] = unranked.match([Profile(categories=("cs.LG",))], NEW)
    # equal scores: new (00011) before cross (00012) before replace (00014)
    assert ids(items) == ["2401.00011", "2401.00012", "2401.00014"]


def test_never_twice_across_versions_and_sources(matcher: Matcher) -> None:
    hf_copy = replace(NEW[1], version=3, sources=("hf-daily",), upvotes=99)
    period = [*NEW, hf_copy]
    profile = Profile(query="preference", trending=5)
    [items] = matcher.match([profile], period, exclude_ids=[{"2401.00011"}])
    assert "2401.00011" not in ids(items)
    assert len(ids(items)) == len(set(ids(items)))
    [again] = matcher.match([profile], period)
    assert ids(again).count("2401.00011") == 1


def test_trending_items_come_after_interest_items(matcher: Matcher) -> None:
    profile = Profile(query="ti:diffusion", trending=2)
    [items] = matcher.match([profile], NEW)
    assert [(i.paper_id, i.trending) for i in items] == [
        ("2401.00010", False),
        ("2401.00013", True),
        ("2401.00011", True),
    ]
    assert items[1].reason == "trending on Hugging Face (90 upvotes)"
    [only] = matcher.match([Profile(trending=1)], NEW)
    assert ids(only) == ["2401.00013"]


def test_exclude_also_removes_trending(matcher: Matcher) -> None:
    [items] = matcher.match([Profile(trending=1, exclude="cat:quant-ph")], NEW)
    assert ids(items) == ["2401.00010"]


def test_ranking_is_deterministic_and_independent_of_input_order(matcher: Matcher) -> None:
    profiles = [
        Profile(categories=("cs.LG",), about="language model preferences"),
        Profile(like=("2301.00001", "2301.00004"), trending=1),
        Profile(query="robot OR qubits", authors=("Preskill",)),
    ]
    expected = matcher.match(profiles, NEW)
    shuffled = NEW[:]
    for seed in range(5):
        random.Random(seed).shuffle(shuffled)
        assert matcher.match(profiles, shuffled) == expected


def test_chunks_give_the_same_result(matcher: Matcher) -> None:
    profiles = [Profile(categories=("cs.LG",)), Profile(about="diffusion images")] * 7
    small = Matcher(
        matcher.model, MatchSettings(min_df=1, chunk_size=3), matcher.window, matcher.window_vectors
    )
    assert small.match(profiles, NEW) == matcher.match(profiles, NEW)
    assert [len(c) for c in small.iter_match(profiles, NEW)] == [3, 3, 3, 3, 2]


def test_reasons_are_truthful(matcher: Matcher) -> None:
    profile = Profile(
        query="ti:diffusion OR abs:qubits",
        authors=("Björn Ommer",),
        categories=("cs.CV",),
        like=("2301.00001",),
    )
    [items] = matcher.match([profile], NEW)
    assert items[0].paper_id == "2401.00010"
    reason = items[0].reason
    assert reason.startswith(
        "matched ti:diffusion; by Björn Ommer; in cs.CV; similar to liked 2301.00001 ("
    )
    assert "abs:qubits" not in reason


def test_liked_metadata_from_the_mapping(matcher: Matcher) -> None:
    outside = Paper("2501.99999", "Surface codes and qubits", "Quantum error correction.")
    [items] = matcher.match([Profile(like=(outside.id,))], NEW, liked={outside.id: outside})
    assert ids(items) == ["2401.00013"]
    assert "similar to liked 2501.99999" in items[0].reason


def test_explain_matches_the_ranking(matcher: Matcher) -> None:
    profile = Profile(
        query="ti:diffusion",
        categories=("cs.CV",),
        about="image generation",
        like=("2301.00001", "9999.99999"),
        dislike=("2301.00005",),
        exclude="cat:quant-ph",
    )
    [items] = matcher.match([profile], NEW)
    top = items[0]
    text = format_decision(matcher.decide(profile, NEW, NEW[0].id))
    assert f"score {top.score:.6f}" in text
    assert "query       ti:diffusion  → hit (+1.00): matched ti:diffusion" in text
    assert "categories  cs.CV  → hit (+0.50): in cs.CV" in text
    assert "exclude     cat:quant-ph  → no hit" in text
    assert "liked    2301.00001 cosine" in text
    assert "disliked 2301.00005 cosine" in text
    assert "ignored (no metadata found): 9999.99999" in text
    assert f"reason      {top.reason}" in text
    assert "verdict     selected: interest item 1 (max_items 15)" in text
    excluded = format_decision(matcher.decide(profile, NEW, NEW[3].id))
    assert "→ HIT: the paper is removed" in excluded
    assert "verdict     not selected: the exclude query matches it" in excluded


def test_exclude_ids_length_is_checked(matcher: Matcher) -> None:
    with pytest.raises(ValueError, match="exclude_ids has 0 sets for 1 profiles"):
        matcher.match([Profile()], NEW, exclude_ids=[])


def test_empty_period_and_empty_window() -> None:
    empty = Matcher.fit([])
    assert empty.match([Profile(about="anything"), Profile(trending=3)], []) == [[], []]
    [items] = empty.match([Profile(categories=("cs.CV",))], NEW)
    assert ids(items) == ["2401.00010"]


def _mixed_profiles(count: int, seed: int) -> list[Profile]:
    rng = random.Random(seed)
    queries = [None, "ti:diffusion", "robot OR qubits", 'abs:"language models"', "cat:cs.*"]
    cats = [(), ("cs.LG",), ("cs.CV", "quant-ph"), ("cs.*",)]
    authors = [(), ("Levine",), ("Yann LeCun", "John Preskill")]
    abouts = [None, "image generation", "graph networks for molecules", "!!!"]
    likes = [(), ("2301.00001",), ("2301.00003", "2301.00004", "9999.00000"), ("2401.00012",)]
    return [
        Profile(
            query=rng.choice(queries),
            categories=rng.choice(cats),
            authors=rng.choice(authors),
            about=rng.choice(abouts),
            like=rng.choice(likes),
            dislike=rng.choice([(), ("2301.00005",)]),
            exclude=rng.choice([None, None, "au:gilmer"]),
            max_items=rng.choice([0, 1, 2, 3, 15]),
            min_score=rng.choice([0.0, 0.0, -1.0, 0.6]),
            trending=rng.choice([0, 0, 1, 3]),
        )
        for _ in range(count)
    ]


@pytest.mark.parametrize(
    ("chunk_size", "threads"), [(1, 1), (7, 2), (4096, 2)], ids=["chunk-1", "chunk-7", "one-chunk"]
)
def test_compact_result_gives_the_same_items_as_the_list_path(
    matcher: Matcher, chunk_size: int, threads: int
) -> None:
    profiles = _mixed_profiles(60, seed=chunk_size)
    sent = [{"2401.00011"} if i % 5 == 0 else set() for i in range(len(profiles))]
    settings = MatchSettings(min_df=1, chunk_size=chunk_size, threads=threads)
    other = Matcher(matcher.model, settings, matcher.window, matcher.window_vectors)
    expected = matcher.match(profiles, NEW, exclude_ids=sent)
    result = other.match_compact(profiles, NEW, exclude_ids=sent)
    assert len(result) == len(profiles)
    assert [result.items(i) for i in range(len(result))] == expected
    assert result.items_range(0, len(result)) == expected
    assert [result.selected(i) for i in range(len(result))] == [ids(x) for x in expected]
    assert other.match(profiles, NEW, exclude_ids=sent) == expected
    assert any(len(x) > 1 for x in expected) and any(x == [] for x in expected)


def test_top_items_cut_ties_by_period_order(unranked: Matcher) -> None:
    # three cs.LG papers score 0.5 each: the cut keeps new before cross before replace
    [two] = unranked.match([Profile(categories=("cs.LG",), max_items=2)], NEW)
    assert ids(two) == ["2401.00011", "2401.00012"]
    [one] = unranked.match([Profile(categories=("cs.LG",), max_items=1)], NEW)
    assert ids(one) == ["2401.00011"]


def test_lsa_blends_into_the_text_cosines() -> None:
    corpus = WINDOW + NEW
    latent = Matcher.fit(corpus, MatchSettings(min_df=1, lsa_dimensions=2, lsa_weight=0.5))
    plain = Matcher.fit(corpus, MatchSettings(min_df=1, lsa_dimensions=0))
    unweighted = Matcher.fit(corpus, MatchSettings(min_df=1, lsa_dimensions=2, lsa_weight=0.0))
    assert latent.lsa is not None and latent.lsa.dimensions == 2
    assert plain.lsa is None
    profile = Profile(about="image generation", like=("2301.00003",), min_score=-10.0)
    with_lsa = latent.match([profile], NEW)[0]
    without = plain.match([profile], NEW)[0]
    assert unweighted.match([profile], NEW)[0] == without
    assert [i.score for i in with_lsa] != [i.score for i in without]
    for item in with_lsa:
        text = format_decision(latent.decide(profile, NEW, item.paper_id))
        assert f"score {item.score:.6f}" in text
        assert "(each cosine = 0.50 × TF-IDF + 0.50 × LSA (2 dimensions))" in text
    # the same window gives the same projection: fitting is deterministic
    again = Matcher.fit(corpus, MatchSettings(min_df=1, lsa_dimensions=2, lsa_weight=0.5))
    assert again.match([profile], NEW)[0] == with_lsa


def test_lsa_is_skipped_for_a_small_window(matcher: Matcher) -> None:
    assert MatchSettings().lsa_dimensions == 128
    assert matcher.lsa is None  # 10 papers < 4 × 128
    with pytest.raises(ValueError, match="lsa_weight must be in"):
        MatchSettings(lsa_weight=1.5)
