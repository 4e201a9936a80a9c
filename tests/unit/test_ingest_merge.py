"""Merging the same paper seen twice (pure)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from pipeline.domain import Paper
from pipeline.ingest.merge import merge_batch, merge_paper

D1 = datetime(2026, 7, 20, 4, tzinfo=UTC)
D2 = datetime(2026, 7, 22, 4, tzinfo=UTC)
SEEN = datetime(2026, 7, 20, 6, tzinfo=UTC)

V1 = Paper(
    id="2607.30001",
    title="Title v1",
    abstract="Abstract v1",
    authors=("Ada",),
    categories=("cs.LG", "stat.ML"),
    url="https://arxiv.org/abs/2607.30001",
    version=1,
    published=D1,
    announced=D1,
    announce_type="new",
    first_seen=SEEN,
    sources=("arxiv-cs-lg",),
)
V2 = Paper(
    id="2607.30001",
    title="Title v2",
    abstract="Abstract v2",
    authors=("Ada", "Alan"),
    categories=("cs.LG",),
    url="https://arxiv.org/abs/2607.30001",
    version=2,
    published=D2,
    announced=D2,
    announce_type="replace",
    doi="10.1/x",
)
HF = Paper(
    id="2607.30001",
    title="Title as HF spells it",
    abstract="HF abstract",
    authors=("Ada",),
    hf_url="https://huggingface.co/papers/2607.30001",
    upvotes=42,
    github_repo="https://github.com/ada/x",
    github_stars=7,
    published=D1,
)
CROSS = Paper(
    id="2607.30001",
    title="Title v1",
    categories=("cs.LG", "cs.CL"),
    version=1,
    announced=D2,
    announce_type="cross",
)


def test_new_paper_gets_its_source() -> None:
    merged = merge_paper(None, V2, source="arxiv-cs-lg")
    assert merged.sources == ("arxiv-cs-lg",) and merged.title == "Title v2"


def test_next_version_updates_the_same_paper() -> None:
    merged = merge_paper(V1, V2, source="arxiv-cs-lg")
    assert (merged.id, merged.version, merged.title, merged.authors) == (
        "2607.30001",
        2,
        "Title v2",
        ("Ada", "Alan"),
    )
    assert merged.published == D1  # first version's date is the publication
    assert (merged.announced, merged.announce_type) == (D2, "replace")
    assert merged.categories == ("cs.LG", "stat.ML")
    assert merged.first_seen == SEEN and merged.doi == "10.1/x"


def test_a_stale_version_cannot_roll_the_paper_back() -> None:
    current = merge_paper(V1, V2, source="s")
    merged = merge_paper(current, V1, source="s")
    assert (merged.version, merged.title) == (2, "Title v2")


@pytest.mark.parametrize("hf_first", [False, True], ids=["arxiv-then-hf", "hf-then-arxiv"])
def test_hf_upvotes_merge_into_the_arxiv_record(hf_first: bool) -> None:
    if hf_first:
        merged = merge_paper(merge_paper(None, HF, source="hf"), V1, source="arxiv-cs-lg")
    else:
        merged = merge_paper(V1, HF, source="hf")
    assert merged.title == "Title v1" and merged.abstract == "Abstract v1"
    assert merged.categories == ("cs.LG", "stat.ML")
    assert (merged.upvotes, merged.github_repo, merged.github_stars) == (
        42,
        "https://github.com/ada/x",
        7,
    )
    assert merged.hf_url == "https://huggingface.co/papers/2607.30001"
    assert set(merged.sources) == {"hf", "arxiv-cs-lg"}


def test_later_upvote_counts_replace_earlier_ones() -> None:
    once = merge_paper(V1, HF, source="hf")
    from dataclasses import replace

    merged = merge_paper(once, replace(HF, upvotes=50, github_stars=None), source="hf")
    assert (merged.upvotes, merged.github_stars) == (50, 7)
    assert merged.sources == ("arxiv-cs-lg", "hf")


def test_cross_list_is_a_new_announcement_for_the_other_category() -> None:
    merged = merge_paper(V1, CROSS, source="arxiv-cs-cl")
    assert merged.categories == ("cs.LG", "stat.ML", "cs.CL")
    assert (merged.announced, merged.announce_type) == (D2, "cross")
    assert merged.version == 1 and merged.first_seen == SEEN


def test_different_papers_are_never_merged() -> None:
    other = Paper(id="2607.99999", title="x")
    with pytest.raises(ValueError, match="cannot merge different papers"):
        merge_paper(V1, other, source="s")


def test_merge_batch_pairs_by_id() -> None:
    fresh = Paper(id="2607.00002", title="Fresh")
    merged = merge_batch({V1.id: V1}, [V2, fresh], source="s")
    assert [(p.id, p.version) for p in merged] == [("2607.30001", 2), ("2607.00002", None)]


@pytest.mark.parametrize("hf_first", [False, True], ids=["arxiv-then-hf", "hf-then-arxiv"])
def test_a_sources_tldr_survives_merges_with_sources_without_one(hf_first: bool) -> None:
    from dataclasses import replace

    hf = replace(HF, tldr="A one-line summary.")
    if hf_first:
        merged = merge_paper(merge_paper(None, hf, source="hf"), V2, source="arxiv-cs-lg")
    else:
        merged = merge_paper(merge_paper(V1, hf, source="hf"), V2, source="arxiv-cs-lg")
    assert merged.tldr == "A one-line summary."
    assert merged.abstract == "Abstract v2"  # arXiv's abstract stays authoritative
    later = merge_paper(merged, replace(HF, tldr="A newer summary."), source="hf")
    assert later.tldr == "A newer summary."
    assert merge_paper(later, replace(HF, tldr=None), source="hf").tldr == "A newer summary."
    assert merge_paper(V1, V2, source="arxiv-cs-lg").tldr is None
