"""Hugging Face Daily Papers adapter on the real capture."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from pipeline.domain import Paper
from pipeline.errors import SourceError
from pipeline.sources import parse_listing
from pipeline.sources.normalise import TLDR_MAX
from tests.factories import SUNDAY_MIDNIGHT as NOW
from tests.ingest_fakes import DATA

CAPTURE = DATA / "hf_api_daily_papers_2026-07-31_5papers.json"


def test_capture_counts_and_trending_fields() -> None:
    result = parse_listing("hf-daily", CAPTURE.read_bytes(), source="hf", now=NOW)
    assert [(p.id, p.upvotes) for p in result.papers] == [
        ("2607.23193", 3),
        ("2607.27958", 11),
        ("2607.28582", 17),
        ("2607.28308", 2),
        ("2607.16922", 0),
    ]
    assert (result.problems, result.skipped) == ([], 0)


def test_capture_fields_of_one_paper() -> None:
    first = parse_listing("hf-daily", CAPTURE.read_bytes(), source="hf", now=NOW).papers[0]
    assert first.title.startswith("OmniScope: Modality-Decoupled Token Compression")
    assert first.authors[:3] == ("Jinsen Su", "Yongdong Luo", "Yuexiao Ma")
    assert len(first.authors) == 6
    assert (first.github_repo, first.github_stars) == ("https://github.com/MAC-AutoML/OmniScope", 3)
    assert first.hf_url == "https://huggingface.co/papers/2607.23193"
    assert first.url == "https://arxiv.org/abs/2607.23193"
    assert first.published == datetime(2026, 7, 28, tzinfo=UTC)
    assert first.categories == () and first.version is None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b'{"error": "rate limited"}', "expected a JSON list of papers, found dict"),
        (b"[1, 2, 3]", "no element of the Daily Papers listing is a paper object"),
    ],
    ids=["broken-json", "error-object", "no-paper-objects"],
)
def test_unusable_listings_fail(body: bytes, message: str) -> None:
    with pytest.raises(SourceError, match=message):
        parse_listing("hf-daily", body, source="hf", now=NOW)


def test_empty_list_is_a_valid_empty_day() -> None:
    result = parse_listing("hf-daily", b"[]", source="hf", now=NOW)
    assert (result.papers, result.problems) == ([], [])


def test_bad_elements_are_counted_and_good_ones_kept() -> None:
    body = b'[7, {"paper": {"id": "2401.00001", "title": "T", "upvotes": 4}}, {"paper": {}}]'
    result = parse_listing("hf-daily", body, source="hf", now=NOW)
    assert [p.id for p in result.papers] == ["2401.00001"]
    assert result.skipped == 2  # one non-object, one with neither title nor link


def _capture_item(**paper_fields: object) -> dict[str, object]:
    """The first real element of the capture, its ``paper`` object updated."""
    item: dict[str, object] = json.loads(CAPTURE.read_bytes())[0]
    paper = item["paper"]
    assert isinstance(paper, dict) and "ai_summary" not in paper  # the capture predates it
    paper.update(paper_fields)
    return item


def _parse_one(item: dict[str, object]) -> Paper:
    result = parse_listing("hf-daily", json.dumps([item]).encode(), source="hf", now=NOW)
    assert result.problems == [] and len(result.papers) == 1
    return result.papers[0]


def test_ai_summary_becomes_the_papers_tldr() -> None:
    summary = "OmniScope compresses  video tokens\nper modality, keeping accuracy at 10% cost."
    first = _parse_one(_capture_item(ai_summary=summary, ai_keywords=["token compression"]))
    assert first.tldr == (
        "OmniScope compresses video tokens per modality, keeping accuracy at 10% cost."
    )
    assert first.abstract.startswith("Existing token compression methods")  # untouched
    assert first.id == "2607.23193" and first.upvotes == 3


def test_element_level_ai_summary_fills_in_and_none_means_none() -> None:
    item = _capture_item()
    item["ai_summary"] = "From the element."
    assert _parse_one(item).tldr == "From the element."
    assert _parse_one(_capture_item()).tldr is None
    assert _parse_one(_capture_item(ai_summary="")).tldr is None
    assert _parse_one(_capture_item(ai_summary=["not", "text"])).tldr is None


def test_hostile_ai_summary_is_cleaned_and_capped() -> None:
    hostile = (
        "<script>alert(1)</script>Safe\x00 \u202etext\x1b[31m with <b>tags</b> &amp; "
        "controls\x07." + " padding" * 200
    )
    tldr = _parse_one(_capture_item(ai_summary=hostile)).tldr
    assert tldr is not None
    assert tldr.startswith("Safe text[31m with tags & controls. padding")
    assert len(tldr) == TLDR_MAX and tldr.endswith("…")
    assert not any(ch in tldr for ch in "\x00\x07\x1b\u202e<>")
    assert "script" not in tldr and "alert" not in tldr
