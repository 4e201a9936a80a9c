"""Pure text helpers used by rendering (table-driven)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from pipeline.render.text import (
    clean_text,
    first_sentence,
    format_day,
    plain_text,
    safe_url,
    shorten_authors,
    snippet,
    truncate,
    wrap_text,
)
from pipeline.render.views import reason_kind

ABSTRACT = (
    "We study preference optimization. Our method, e.g. DPO, is simple and stable. "
    "It needs no reward model and no sampling during training at all. "
    "Experiments show gains on summarization and dialogue."
)

SNIPPETS = [
    ("short-unchanged", "One sentence.", 400, "One sentence."),
    (
        "cut-at-sentence",
        ABSTRACT,
        120,
        "We study preference optimization. Our method, e.g. DPO, is simple and stable.",
    ),
    (
        "abbreviation-is-not-an-end",
        "Methods, e.g. DPO and IPO, are compared in detail across many benchmarks here. Then more.",
        40,
        "Methods, e.g. DPO and IPO, are compared …",
    ),
    ("no-sentence-end-word-cut", "word " * 100, 42, ("word " * 8).strip() + " …"),
    ("whitespace-collapsed", "A  sentence\nacross\r\nlines.", 400, "A sentence across lines."),
]


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [(t, n, e) for _, t, n, e in SNIPPETS],
    ids=[i for i, *_ in SNIPPETS],
)
def test_snippet(text: str, limit: int, expected: str) -> None:
    result = snippet(text, limit)
    assert result == expected
    assert len(result) <= limit + 2


AUTHORS = [
    ("none", (), ""),
    ("one", ("A",), "A"),
    ("four-all-shown", ("A", "B", "C", "D"), "A, B, C, D"),
    ("five-shortened", ("A", "B", "C", "D", "E"), "A, B, C … +2"),
    ("fifteen", tuple(f"N{i}" for i in range(15)), "N0, N1, N2 … +12"),
    ("blank-names-skipped", ("A", " ", "B\n"), "A, B"),
]


@pytest.mark.parametrize(
    ("authors", "expected"), [(a, e) for _, a, e in AUTHORS], ids=[i for i, *_ in AUTHORS]
)
def test_shorten_authors(authors: tuple[str, ...], expected: str) -> None:
    assert shorten_authors(authors, keep=3) == expected


URLS = [
    ("https", "https://arxiv.org/abs/2305.18290", "https://arxiv.org/abs/2305.18290"),
    ("http-upper", "HTTP://example.org/x?a=1&b=2", "HTTP://example.org/x?a=1&b=2"),
    ("javascript", "javascript:alert(1)", None),
    ("javascript-mixed-case", "JaVaScRiPt:alert(1)", None),
    ("data", "data:text/html;base64,PHNjcmlwdD4=", None),
    ("vbscript", "vbscript:msgbox(1)", None),
    ("relative", "/abs/2305.18290", None),
    ("protocol-relative", "//evil.example/x", None),
    ("userinfo", "https://arxiv.org@evil.example/", None),
    ("space", "https://arxiv.org/a b", None),
    ("newline", "https://arxiv.org/a\nb", None),
    ("empty", "", None),
    ("none", None, None),
    ("too-long", "https://x.example/" + "a" * 3000, None),
    ("surrounding-space", "  https://arxiv.org/abs/1  ", "https://arxiv.org/abs/1"),
    ("upper-case-scheme", "HTTPS://arxiv.org/abs/1", "HTTPS://arxiv.org/abs/1"),
    ("backslash-host", "https://arxiv.org\\evil.example/", None),
    ("empty-host", "https:///path", None),
    ("query-right-after-host", "http://x.example?a=b@c", "http://x.example?a=b@c"),
    ("at-after-path", "https://x.example/a@b", "https://x.example/a@b"),
    ("short-scheme", "https:/x.example", None),
    ("tab", "https://x.example/a\tb", None),
    ("non-ascii-path", "https://x.example/ü", "https://x.example/ü"),
]


@pytest.mark.parametrize(
    ("url", "expected"), [(u, e) for _, u, e in URLS], ids=[i for i, *_ in URLS]
)
def test_safe_url(url: str | None, expected: str | None) -> None:
    assert safe_url(url) == expected


CLEAN = [
    ("controls", "a\x00b\x07c\x1bd", "abcd"),
    ("whitespace", " a \r\n\t b \u2028 c ", "a b c"),
    ("unchanged", "Débruitage Ω", "Débruitage Ω"),
]


@pytest.mark.parametrize(
    ("value", "expected"), [(v, e) for _, v, e in CLEAN], ids=[i for i, *_ in CLEAN]
)
def test_clean_text(value: str, expected: str) -> None:
    assert clean_text(value) == expected


PLAIN = [
    ("tags-dropped", "<p>We <b>show</b> it.</p>", "We show it."),
    ("script-content-dropped", "Text<script>alert(1)</script> more", "Text more"),
    ("entities-decoded", "A &amp; B &lt;3", "A & B <3"),
    ("plain-unchanged", "x < y and y > z", "x < y and y > z"),
]


@pytest.mark.parametrize(
    ("value", "expected"), [(v, e) for _, v, e in PLAIN], ids=[i for i, *_ in PLAIN]
)
def test_plain_text(value: str, expected: str) -> None:
    assert plain_text(value) == expected


def test_wrap_text_keeps_indent_and_hanging_list_markers() -> None:
    text = "    " + "word " * 30 + "\n" + " 1. " + "item " * 30 + "\nshort"
    lines = wrap_text(text, 72).split("\n")
    assert all(len(line) <= 72 for line in lines)
    assert lines[0].startswith("    word") and lines[1].startswith("    word")
    numbered = lines.index(next(line for line in lines if line.startswith(" 1. ")))
    assert lines[numbered + 1].startswith("    item")
    assert lines[-1] == "short"
    assert " ".join(" ".join(lines).split()) == " ".join(text.split())


def test_wrap_text_never_breaks_a_long_url() -> None:
    url = "https://digest.lab.example/f/more/" + "x" * 100
    lines = wrap_text(f"    More like this: {url}", 72).split("\n")
    assert lines == ["    More like this:", f"    {url}"]


def test_wrap_text_reserves_room_for_a_prefix_on_the_first_line() -> None:
    lines = wrap_text("title " * 20, 72, first_line_offset=4).split("\n")
    assert len(lines[0]) <= 68
    assert all(line.startswith("    ") and len(line) <= 72 for line in lines[1:])


def test_truncate_and_format_day() -> None:
    assert truncate("short", 10) == "short"
    assert truncate("one two three four", 10) == "one two…"
    assert format_day(datetime(2026, 11, 3, tzinfo=UTC)) == "3 Nov 2026"
    assert format_day(None) == ""


FIRST_SENTENCES = [
    ("plain", "We study X. Then Y.", "We study X."),
    ("abbreviation", "Methods, e.g. DPO, work. More follows.", "Methods, e.g. DPO, work."),
    ("one-sentence", "No end in sight", "No end in sight"),
    ("long", "word " * 100, ("word " * 59).strip() + "…"),
    ("whitespace", "  Spread\nacross   lines. Next.", "Spread across lines."),
]


@pytest.mark.parametrize(
    ("text", "expected"),
    [(t, e) for _, t, e in FIRST_SENTENCES],
    ids=[i for i, *_ in FIRST_SENTENCES],
)
def test_first_sentence(text: str, expected: str) -> None:
    assert first_sentence(text) == expected
    assert len(first_sentence(text)) <= 300


REASONS = [
    ('matched ti:"preference optimization"; in cs.LG', "query"),
    ("by Y. LeCun; in cs.CV", "author"),
    ("followed author Edward J. Hu", "author"),
    ("in cs.LG, stat.ML", "category"),
    ("category cs.LG", "category"),
    ("similar to liked 2106.09685 (0.41)", "similar"),
    ("close to your about text (0.23)", "similar"),
    ("trending on Hugging Face (57 upvotes)", "trending"),
    ("something else", "match"),
    ("", "match"),
]


@pytest.mark.parametrize(
    ("reason", "kind"), REASONS, ids=[k + str(i) for i, (_, k) in enumerate(REASONS)]
)
def test_one_word_reason(reason: str, kind: str) -> None:
    assert reason_kind(reason) == kind
    assert reason_kind(reason, trending=True) == "trending"
