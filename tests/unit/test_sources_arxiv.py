"""arXiv adapters on the real captures (exact counts and fields) and on listings built in
the current rss.arxiv.org layout."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import pytest

from pipeline.errors import SourceError
from pipeline.sources import SOURCE_KINDS, parse_listing
from tests.factories import SUNDAY_NOON as NOW
from tests.ingest_fakes import DATA, Item, arxiv_rss_listing

DAY = datetime(2026, 7, 20, 4, 0, tzinfo=UTC)


def parse(kind: str, name: str) -> object:
    return parse_listing(kind, (DATA / name).read_bytes(), source=name, now=NOW)


def test_source_kinds_are_the_documented_four() -> None:
    assert SOURCE_KINDS == ("arxiv-rss", "arxiv-api", "hf-daily", "feed")


# -- real captures ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name",
    [
        "rss_arxiv_org_rss_cs_empty_weekend_2026-03-29.xml",
        "rss_arxiv_org_atom_cs_empty_weekend_2025-11-23.xml",
    ],
    ids=["rss2-weekend", "atom-weekend"],
)
def test_empty_weekend_listing_is_a_valid_empty_result(name: str) -> None:
    result = parse_listing("arxiv-rss", (DATA / name).read_bytes(), source="cs", now=NOW)
    assert (result.papers, result.problems, result.skipped) == ([], [], 0)


def test_legacy_rss1_listing_counts_and_announce_types() -> None:
    result = parse_listing(
        "arxiv-rss", (DATA / "legacy_rdf_math_2012-09-12.xml").read_bytes(), source="m", now=NOW
    )
    assert len(result.papers) == 126
    assert Counter(p.announce_type for p in result.papers) == {"new": 71, "replace": 54, "cross": 1}
    assert result.problems == [] and result.skipped == 0


def test_legacy_rss1_fields() -> None:
    result = parse_listing(
        "arxiv-rss", (DATA / "legacy_rdf_math_2012-09-12.xml").read_bytes(), source="m", now=NOW
    )
    by_id = {p.id: p for p in result.papers}
    first = by_id["1209.2411"]
    assert first.title == "On the first time that an Ito process hits a barrier"
    assert first.authors == ("Gerardo Hernandez-del-Valle",)
    assert first.categories == ("math.PR",)
    assert first.version == 1
    assert first.url == "https://arxiv.org/abs/1209.2411"
    assert first.announced == datetime(2012, 9, 13, 1, 30, tzinfo=UTC)
    assert "class $\\mathcal{B}^2$." in first.abstract  # LaTeX verbatim
    assert by_id["1209.2440"].abstract.startswith('Let X be a K\\"ahler manifold')
    cross = by_id["0901.1155"]
    assert (cross.announce_type, cross.categories, cross.version) == ("cross", ("cs.DS",), 2)
    assert cross.authors == ("Itai Benjamini", "Yury Makarychev")
    replaced = by_id["0804.1418"]
    assert (replaced.announce_type, replaced.version) == ("replace", 4)
    assert replaced.authors[0] == "Bernd Ammann (Universitaet Regensburg)"


def test_api_error_feed_is_a_clear_source_error() -> None:
    body = (DATA / "newfmt_2026_error_http400_bad_id.xml").read_bytes()
    message = "arXiv API answered with an error: incorrect id format for abc"
    with pytest.raises(SourceError, match=message):
        parse_listing("arxiv-api", body, source="liked", now=NOW)


def test_api_empty_result() -> None:
    body = (DATA / "newfmt_2026_empty_results.xml").read_bytes()
    result = parse_listing("arxiv-api", body, source="q", now=NOW)
    assert (result.papers, result.total_results, result.problems) == ([], 0, [])


def test_api_versioned_id_list() -> None:
    body = (DATA / "newfmt_2026_idlist_versioned.xml").read_bytes()
    [paper] = parse_listing("arxiv-api", body, source="q", now=NOW).papers
    assert (paper.id, paper.version, paper.title) == ("2104.12255", 1, "0")
    assert paper.authors == ("Quan Thoi Minh Nguyen",)
    assert paper.categories == ("cs.CR",)
    assert paper.published == datetime(2021, 4, 20, 16, 7, 14, tzinfo=UTC)
    assert paper.pdf_url == "https://arxiv.org/pdf/2104.12255v1"


def test_api_search_page() -> None:
    body = (DATA / "newfmt_2026_search_testing_10.xml").read_bytes()
    result = parse_listing("arxiv-api", body, source="q", now=NOW)
    assert len(result.papers) == 10
    assert result.total_results == 214881
    first = result.papers[0]
    assert first.id == "2202.12139"
    assert first.categories == ("cs.SE", "cs.LG")
    assert first.doi == "10.1109/icstw55395.2022.00035"
    assert first.journal_ref is not None and first.journal_ref.startswith("Artificial Intelligence")
    assert result.papers[1].authors[0] == "Aurora Ramírez"  # mojibake in the capture, repaired


def test_api_old_format_with_old_style_ids() -> None:
    body = (DATA / "oldfmt_2016_search_au_del_maestro.xml").read_bytes()
    result = parse_listing("arxiv-api", body, source="q", now=NOW)
    assert result.total_results == 31
    ids = [(p.id, p.version, p.primary_category) for p in result.papers]
    assert len(ids) == 10
    assert ("cond-mat/0412498", 1, "cond-mat.str-el") in ids
    assert ("1303.6954", 2, "cond-mat.mes-hall") in ids
    assert result.papers[0].categories == ("cond-mat.mes-hall", "cond-mat.other")


# -- current RSS 2.0 layout ------------------------------------------------------------------------
def listing(*items: Item) -> bytes:
    return arxiv_rss_listing(items, day=DAY)


@pytest.mark.parametrize(
    "announce",
    ["new", "cross", "replace", "replace-cross"],
    ids=["new", "cross", "replace", "replace-cross"],
)
def test_rss2_announce_types(announce: str) -> None:
    body = listing(Item("2607.30001", version=3, announce_type=announce))
    [paper] = parse_listing("arxiv-rss", body, source="cs", now=NOW).papers
    assert (paper.id, paper.version, paper.announce_type) == ("2607.30001", 3, announce)
    assert paper.announced == DAY


def test_rss2_fields() -> None:
    body = listing(
        Item(
            "2607.30001",
            title="Diffusion for $x<y$ &amp; friends",
            abstract="We show $a<b$ and <b>c</b>.\n  Whitespace   collapses.",
            authors=("Ada Lovelace", "Alan Turing", "Grace Hopper"),
            categories=("cs.LG", "cs.CL", "stat.ML"),
            doi="10.1000/XYZ.1",
            journal_ref="J. Test 1 (2026)",
        ),
        Item("hep-ex/0307015", title="Old style", categories=("hep-ex",)),
    )
    result = parse_listing("arxiv-rss", body, source="cs", now=NOW)
    first, old = result.papers
    assert first.title == "Diffusion for $x<y$ & friends"
    assert first.abstract == "We show $a<b$ and c . Whitespace collapses."
    assert first.authors == ("Ada Lovelace", "Alan Turing", "Grace Hopper")
    assert first.categories == ("cs.LG", "cs.CL", "stat.ML")
    assert (first.doi, first.journal_ref) == ("10.1000/xyz.1", "J. Test 1 (2026)")
    assert (first.url, first.pdf_url) == (
        "https://arxiv.org/abs/2607.30001",
        "https://arxiv.org/pdf/2607.30001",
    )
    assert first.published == DAY  # a "new" announcement is the publication
    assert (old.id, old.version) == ("hep-ex/0307015", 1)


def test_rss2_duplicate_guids_are_one_paper_highest_version() -> None:
    body = listing(
        Item("2607.30001", version=1, title="First"),
        Item("2607.30001", version=2, title="Second", announce_type="replace"),
        Item("2607.30001", version=1, title="Third"),
    )
    result = parse_listing("arxiv-rss", body, source="cs", now=NOW)
    [paper] = result.papers
    assert (paper.version, paper.title) == (2, "Second")
    assert result.skipped == 2
    assert result.problems == ["2 duplicate entries (same paper listed twice) merged"]


def test_rss2_truncated_listing_keeps_valid_entries_and_records_problem() -> None:
    body = listing(*(Item(f"2607.3000{i}", title=f"Paper {i}") for i in range(1, 5)))
    cut = body[: body.index(b"<title>Paper 4</title>") + 10]
    result = parse_listing("arxiv-rss", cut, source="cs", now=NOW)
    assert [p.id for p in result.papers][:3] == ["2607.30001", "2607.30002", "2607.30003"]
    assert result.problems[0].startswith("not well-formed XML")


def test_rss2_malformed_with_zero_entries_is_a_failure() -> None:
    with pytest.raises(SourceError, match="not a readable feed"):
        body = b"<?xml version='1.0'?><rss><channel><title>x"
        parse_listing("arxiv-rss", body, source="cs", now=NOW)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "the document is empty"),
        (b"<html><body>maintenance</body></html>", "not an arXiv listing"),
    ],
    ids=["empty-body", "html-page"],
)
def test_unusable_documents_fail(body: bytes, message: str) -> None:
    with pytest.raises(SourceError, match=message):
        parse_listing("arxiv-rss", body, source="cs", now=NOW)


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(SourceError, match="unknown source kind 'gopher'"):
        parse_listing("gopher", b"x", source="s", now=NOW)


def test_entries_dated_in_the_far_future_lose_the_date() -> None:
    body = arxiv_rss_listing([Item("2607.30001")], day=datetime(2031, 1, 1, tzinfo=UTC))
    [paper] = parse_listing("arxiv-rss", body, source="cs", now=NOW).papers
    assert paper.announced is None and paper.published is None
