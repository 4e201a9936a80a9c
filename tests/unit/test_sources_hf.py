"""Hugging Face Daily Papers adapter on the real capture."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from pipeline.errors import SourceError
from pipeline.sources import parse_listing
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
