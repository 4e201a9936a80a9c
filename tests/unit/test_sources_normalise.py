"""Canonical identity, cleaning and caps: table-driven tests of the pure helpers."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from pipeline.sources import normalise as n
from pipeline.sources.listing import RawEntry, make_paper
from tests.factories import SUNDAY_MIDNIGHT as NOW


@pytest.mark.parametrize(
    ("texts", "expected"),
    [
        (("oai:arXiv.org:2401.12345v2",), ("2401.12345", 2)),
        (("http://arxiv.org/abs/2104.12255v1",), ("2104.12255", 1)),
        (("https://arxiv.org/pdf/2305.18290",), ("2305.18290", None)),
        (("2305.18290v10",), ("2305.18290", 10)),
        (("astro-ph/0601001",), ("astro-ph/0601001", None)),
        (("http://arxiv.org/abs/math.GT/0309136v3",), ("math.GT/0309136", 3)),
        (("arXiv:0704.0001",), ("0704.0001", None)),
        (("https://huggingface.co/papers/2607.23193",), ("2607.23193", None)),
        ((None, "", "https://blog.example/2305.18290"), None),
        (("2313.12345",), None),  # month 13
        (("tag:github.com,2008:Repository/11167738/v3.9.0",), None),
        ((None, "https://arxiv.org/abs/2401.00001"), ("2401.00001", None)),
    ],
    ids=[
        "oai-guid",
        "api-id",
        "pdf-link",
        "bare-versioned",
        "old-style",
        "old-style-subject-class",
        "arxiv-prefix-4-digit",
        "hf-link",
        "unrelated-link",
        "invalid-month",
        "github-tag",
        "second-hint",
    ],
)
def test_arxiv_id_in(
    texts: tuple[str | None, ...], expected: tuple[str, int | None] | None
) -> None:
    assert n.arxiv_id_in(*texts) == expected


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"arxiv_id": "2401.00001", "doi": "10.1/x", "link": "https://a"}, "2401.00001"),
        ({"arxiv_id": None, "doi": "10.1/x", "link": "https://a"}, "doi:10.1/x"),
        ({"arxiv_id": None, "doi": None, "link": "https://a"}, "url:https://a"),
    ],
    ids=["arxiv-first", "doi-second", "link-third"],
)
def test_canonical_id_order(kwargs: dict[str, str | None], expected: str) -> None:
    assert n.canonical_id(title="t", abstract="a", **kwargs) == expected  # type: ignore[arg-type]


def test_canonical_id_falls_back_to_a_content_hash() -> None:
    one = n.canonical_id(arxiv_id=None, doi=None, link=None, title="T", abstract="A")
    assert one.startswith("sha:") and len(one) == 44
    assert one != n.canonical_id(arxiv_id=None, doi=None, link=None, title="T", abstract="B")


def test_very_long_links_are_hashed_to_fit_the_id_column() -> None:
    link = "https://a.example/" + "x" * 400
    assert n.canonical_id(arxiv_id=None, doi=None, link=link, title="", abstract="").startswith(
        "sha:"
    )


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  Deep\n\tlearning  ", "Deep learning"),
        ("<p>Para <em>one</em></p><p>two</p>", "Para one two"),
        ("Tom &amp; Jerry &lt;3 &#233;", "Tom & Jerry <3 é"),
        ("$a<b$ and $c > d$", "$a<b$ and $c > d$"),
        ("\\emph{x} $\\mathcal{O}(n^2)$", "\\emph{x} $\\mathcal{O}(n^2)$"),
        ("<script>alert(1)</script>Safe<style>p{}</style>", "Safe"),
        ("<a href=\"https://x\" title='y'>link</a>", "link"),
        ("nul\x00 and bell\x07", "nul and bell"),
        ("Ram\u00c3\u00adrez", "Ramírez"),
        (None, ""),
    ],
    ids=[
        "whitespace",
        "html-tags",
        "entities",
        "latex-comparisons",
        "latex-commands",
        "script-style",
        "attributes",
        "controls",
        "mojibake",
        "none",
    ],
)
def test_clean_text(raw: str | None, expected: str) -> None:
    assert n.clean_text(raw, 1000) == expected


def test_caps_apply_to_every_field() -> None:
    raw = RawEntry(
        title="T" * 5000,
        abstract="A " * 50_000,
        authors=tuple(f"Author {i}" for i in range(2000)),
        categories=tuple(f"cs.X{i}" for i in range(100)),
        link="https://a.example/" + "p" * 3000,
        journal_ref="J" * 5000,
        arxiv=False,
    )
    paper = make_paper(raw, now=NOW)
    assert paper is not None
    assert len(paper.title) == n.TITLE_MAX and paper.title.endswith("…")
    assert len(paper.abstract) <= n.ABSTRACT_MAX
    assert len(paper.authors) == n.AUTHORS_MAX
    assert len(paper.categories) == n.CATEGORIES_MAX
    assert paper.url is None  # an over-long link is dropped, not truncated into a wrong URL
    assert paper.journal_ref is not None and len(paper.journal_ref) == n.JOURNAL_REF_MAX


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (RawEntry(), None),
        (RawEntry(title="Only title"), "Only title"),
        (RawEntry(link="https://a.example/p"), "https://a.example/p"),
        (RawEntry(title="  ", link="javascript:alert(1)"), None),
    ],
    ids=["nothing", "title-only", "link-only", "blank-title-bad-link"],
)
def test_entry_needs_title_or_link(raw: RawEntry, expected: str | None) -> None:
    paper = make_paper(raw, now=NOW)
    assert (paper.title if paper else None) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Mon, 20 Jul 2026 00:00:00 -0400", datetime(2026, 7, 20, 4, 0, tzinfo=UTC)),
        ("2021-04-20T16:07:14Z", datetime(2021, 4, 20, 16, 7, 14, tzinfo=UTC)),
        ("2012-09-12T20:30:00-05:00", datetime(2012, 9, 13, 1, 30, tzinfo=UTC)),
        ("2026-07-28", datetime(2026, 7, 28, tzinfo=UTC)),
        ("2099-01-01T00:00:00Z", None),
        ("yesterday-ish", None),
        (None, None),
    ],
    ids=["rfc822", "iso-z", "iso-offset", "date-only", "far-future", "garbage", "none"],
)
def test_parse_date(value: str | None, expected: datetime | None) -> None:
    assert n.parse_date(value, now=NOW) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (
            "Ada Lovelace, Alan Turing and Grace Hopper",
            ("Ada Lovelace", "Alan Turing", "Grace Hopper"),
        ),
        ('<a href="x">A. One</a>, <a href="y">B. Two</a>', ("A. One", "B. Two")),
        ("LAPALU, N., SIMON, A.", ("N. LAPALU", "A. SIMON")),
        ("jonas@example.org (Jonas Große)", ("Jonas Große",)),
        ("Same, Same", ("Same",)),
    ],
    ids=["arxiv-creator", "legacy-html", "last-initials", "email-name", "dedupe"],
)
def test_split_authors(value: str, expected: tuple[str, ...]) -> None:
    assert n.split_authors(value) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("C1 \u009b31m control", "C1 31m control"),
        ("bidi \u202eevil\u202c and \u2066isolate\u2069", "bidi evil and isolate"),
        ("private \ue002 placeholder &#xE003;", "private placeholder"),
        ("zero\u200bwidth \ufeffBOM", "zerowidth BOM"),
        ("Ram\u00c3\u00adrez", "Ram\u00edrez"),  # mojibake repaired before C1 is stripped
    ],
    ids=["c1", "bidi", "private-use", "zero-width", "mojibake-first"],
)
def test_clean_text_drops_spoofing_and_internal_characters(raw: str, expected: str) -> None:
    assert n.clean_text(raw, 200) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("https://arxiv.org/abs/2401.00001", "https://arxiv.org/abs/2401.00001"),
        (" https://x.example/a b ", "https://x.example/ab"),
        ("javascript:alert(1)", None),
        ("//evil.example/x", None),
        ("https://arxiv.org@evil.example/abs/1", None),
        ('https://ok.example/q?a="><script>', None),
        ("https://ok.example/\ue002", None),
        ("https://ok.example/\u202eabc", None),
        ("https:///nohost", None),
        ("https://b\u00fccher.example/\u00e9t\u00e9", "https://b%C3%BCcher.example/%C3%A9t%C3%A9"),
    ],
    ids=["plain", "whitespace", "javascript", "protocol-relative", "userinfo", "quotes",
         "private-use", "bidi", "no-host", "iri"],
)  # fmt: skip
def test_clean_url(raw: str, expected: str | None) -> None:
    assert n.clean_url(raw) == expected
