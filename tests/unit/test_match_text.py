"""Text normalisation, the light stemmer, author names, and the period index."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.domain import Paper
from pipeline.match.authors import names_match, parse_name
from pipeline.match.index import PeriodIndex, category_matches
from pipeline.match.scoring import top_k
from pipeline.match.text import _WORD, analyze, normalize, words


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("optimization", "optimizations"),
        ("optimization", "optimisation"),
        ("optimise", "optimized"),
        ("fine-tuning", "fine tuning"),
        ("fine‐tuning", "Fine–Tuning"),
        ("modelling", "modeled"),
        ("behaviour", "behaviors"),
        ("studies", "study"),
        ("Schrödinger", "schrodinger"),
        ("ﬁne", "fine"),
        ("LeCun's", "lecun"),
        ("networks", "network"),
        ("running", "run"),
    ],
    ids=[
        "plural",
        "british",
        "verb-forms",
        "hyphen",
        "unicode-hyphen-dash-case",
        "double-l",
        "our-and-plural",
        "ies",
        "diacritics",
        "nfkc-ligature",
        "possessive",
        "s",
        "doubled-consonant",
    ],
)
def test_variants_agree(a: str, b: str) -> None:
    assert analyze(a) == analyze(b)


@pytest.mark.parametrize(
    ("a", "b"),
    [("general", "generalization"), ("loss", "los"), ("analysis", "analyst"), ("string", "str")],
    ids=["light-not-porter", "ss-kept", "is-kept", "no-vowel-stem"],
)
def test_distinct_words_stay_apart(a: str, b: str) -> None:
    assert analyze(a) != analyze(b)


@settings(max_examples=400, deadline=None)
@given(
    st.text(
        alphabet=st.sampled_from(
            [*"abcXYZ09 -/'’_.,s", "\u2010", "\u2212", "\u00ad", "é", "ﬁ", "\u0301"]
        ),
        max_size=40,
    )
)
def test_words_fast_path_equals_full_normalisation(text: str) -> None:
    # words() skips normalize() for ASCII text; the result must be the same.
    assert words(text) == _WORD.findall(normalize(text))


def test_words_split_on_punctuation_and_keep_digits() -> None:
    assert words("GPT-4o: (a) 3D/2D!") == ["gpt", "4o", "a", "3d", "2d"]


@pytest.mark.parametrize(
    ("followed", "author", "same"),
    [
        ("Yann LeCun", "Y. LeCun", True),
        ("Yann LeCun", "LeCun, Yann", True),
        ("Yann LeCun", "Yann Le Cun", True),
        ("LeCun_Y", "Yann LeCun", True),
        ("Bernhard Schölkopf", "B. Scholkopf", True),
        ("Geoffrey Hinton", "Geoffrey E. Hinton", True),
        ("Ben Smith", "Benjamin Smith", True),
        ("Zhang Wei", "Wei Zhang", True),
        ("LeCun", "Yann LeCun", True),
        ("Yann LeCun", "Yoshua LeCun", False),
        ("Yann LeCun", "Yann Bengio", False),
        ("", "Yann LeCun", False),
    ],
    ids=[
        "initial",
        "comma-order",
        "particle",
        "arxiv-underscore",
        "diacritics",
        "middle-initial",
        "prefix-name",
        "family-name-first",
        "surname-only",
        "other-given-name",
        "other-surname",
        "empty",
    ],
)
def test_author_names(followed: str, author: str, same: bool) -> None:
    assert names_match(parse_name(followed), parse_name(author)) is same


@pytest.mark.parametrize(
    ("pattern", "category", "hit"),
    [
        ("cs.LG", "cs.LG", True),
        ("cs.lg", "cs.LG", True),
        ("cs.*", "cs.CV", True),
        ("cs", "cs.CV", True),
        ("cs.*", "eess.IV", False),
        ("math", "math-ph", False),
        ("cs.L*", "cs.LG", True),
    ],
    ids=["exact", "case", "wildcard", "archive", "other-archive", "archive-not-prefix", "prefix"],
)
def test_category_patterns(pattern: str, category: str, hit: bool) -> None:
    assert category_matches(pattern, category) is hit


PAPERS = [
    Paper(
        "2401.00001",
        "Direct Preference Optimisation for language models",
        "We fine-tune models with human feedback.",
        authors=("Rafael Rafailov", "Chelsea Finn"),
        categories=("cs.LG", "cs.CL"),
    ),
    Paper(
        "2401.00002",
        "Diffusion models beat GANs",
        "Image synthesis with score-based models and preference data.",
        authors=("Prafulla Dhariwal", "Alex Nichol"),
        categories=("cs.CV",),
    ),
    Paper(
        "2401.00003",
        "Optimal transport in quantum physics",
        "A fine tuning of quantum optimization.",
        authors=("Yann LeCun",),
        categories=("quant-ph", "cs.LG"),
    ),
]


@pytest.mark.parametrize(
    ("query", "ids"),
    [
        ("ti:optimization", {"2401.00001"}),
        ('ti:"preference optimizations"', {"2401.00001"}),
        ('abs:"preference optimization"', set()),
        ("ti:optim*", {"2401.00001", "2401.00003"}),
        ("abs:fine-tuning", {"2401.00001", "2401.00003"}),
        ("cat:cs.LG", {"2401.00001", "2401.00003"}),
        ("cat:cs.LG ANDNOT cat:quant-ph", {"2401.00001"}),
        ("au:lecun", {"2401.00003"}),
        ('au:"Y. LeCun"', {"2401.00003"}),
        ("au:Finn_C", {"2401.00001"}),
        ("nichol", {"2401.00002"}),
        ("ti:diffusion OR au:rafailov", {"2401.00001", "2401.00002"}),
        ("abs:(preference AND image)", {"2401.00002"}),
        ("cat:cs.*", {"2401.00001", "2401.00002", "2401.00003"}),
    ],
    ids=[
        "stem",
        "phrase-stemmed",
        "phrase-needs-adjacency",
        "wildcard-on-surface",
        "hyphen-phrase",
        "category-cross-list",
        "andnot",
        "author-word",
        "author-initial",
        "author-arxiv-form",
        "all-includes-authors",
        "or",
        "field-group",
        "category-wildcard",
    ],
)
def test_query_bitsets(query: str, ids: set[str]) -> None:
    index = PeriodIndex(PAPERS)
    mask = index.query(query)
    assert {p.id for i, p in enumerate(PAPERS) if mask >> i & 1} == ids


def _reference_top_k(score: np.ndarray, k: np.ndarray) -> list[list[tuple[int, float]]]:
    """Per row: sort eligible papers by (score rounded to 1e-6 descending, index)."""
    out = []
    for row, limit in zip(score.tolist(), k.tolist(), strict=True):
        ranked = sorted((-round(v, 6), j) for j, v in enumerate(row) if v != float("-inf"))
        out.append([(j, -negative) for negative, j in ranked[:limit]])
    return out


@settings(max_examples=200, deadline=None)
@given(
    st.integers(1, 6),
    st.integers(1, 12),
    st.lists(
        st.sampled_from([0.5, 1.0, 0.1234564, 0.1234566, 0.1234571, -0.3, float("-inf")]),
        min_size=72,
        max_size=72,
    ),
    st.lists(st.integers(0, 14), min_size=6, max_size=6),
)
def test_top_k_equals_a_plain_sort(
    rows: int, cols: int, values: list[float], limits: list[int]
) -> None:
    score = np.array(values[: rows * cols], dtype=np.float32).reshape(rows, cols)
    k = np.array(limits[:rows], dtype=np.int64)
    r, c, s = top_k(score, k)
    got: list[list[tuple[int, float]]] = [[] for _ in range(rows)]
    for row, col, value in zip(r.tolist(), c.tolist(), s.tolist(), strict=True):
        got[row].append((col, value))
    expected = _reference_top_k(score.astype(np.float64), k)
    assert [[col for col, _ in x] for x in got] == [[col for col, _ in x] for x in expected]
    for x, y in zip(got, expected, strict=True):
        assert [v for _, v in x] == pytest.approx([v for _, v in y], abs=1e-6)
