"""Pure text helpers for rendering: cleaning, URLs, authors, snippets, wrapping.

Everything here is a plain function of its arguments; no Jinja, no I/O.
"""

from __future__ import annotations

import html
import re
from datetime import datetime

import nh3

__all__ = [
    "clean_text",
    "collapse_whitespace",
    "first_sentence",
    "format_day",
    "plain_text",
    "safe_url",
    "shorten_authors",
    "snippet",
    "truncate",
    "wrap_text",
]

_WS = re.compile(r"\s+")
# Controls left after whitespace collapsing.
_CONTROLS = re.compile("[\x00-\x08\x0b\x0e-\x1f\x7f-\x9f]")
_SENTENCE_END = re.compile(r"[.!?][\"')\]]?(?=\s+[A-Z0-9(\"'])")
# Abbreviations that end in "." without ending a sentence.
_ABBREVIATIONS = ("e.g.", "i.e.", "et al.", "etc.", "vs.", "cf.", "Fig.", "Eq.", "Sec.", "approx.")
_MAX_URL = 2048
_HTTP_URL = re.compile(
    r"[Hh][Tt][Tt][Pp][Ss]?://[^\s/?#@\\\x00-\x1f\x7f-\x9f]+"
    r"(?:[/?#][^\s\x00-\x1f\x7f-\x9f]*)?"
)


def collapse_whitespace(value: str) -> str:
    """Every run of whitespace (CR, LF, tabs, U+2028 ...) becomes one space; ends stripped."""
    return _WS.sub(" ", value).strip()


def clean_text(value: str) -> str:
    """Collapse whitespace and drop the remaining control characters (for bodies)."""
    if value.isprintable() and "  " not in value and value == value.strip():
        return value  # the common case: nothing to clean, no regular expression run
    return collapse_whitespace(_CONTROLS.sub("", value))


def plain_text(value: str) -> str:
    """Text from feed content that may carry HTML: tags dropped, entities decoded, cleaned."""
    if "<" in value or "&" in value:
        value = html.unescape(nh3.clean(value, tags=set()))
    return clean_text(value)


def safe_url(value: str | None) -> str | None:
    """``value`` if it is an absolute http(s) URL fit for an ``href``; ``None`` otherwise.

    No user-info (``user@host``), no whitespace or control characters, at most
    2048 characters.
    Autoescaping then handles ``&`` and quotes.
    """
    if not value:
        return None
    url = value.strip()
    if len(url) > _MAX_URL:
        return None
    if _HTTP_URL.fullmatch(url) is None:
        return None
    return url


def shorten_authors(authors: tuple[str, ...], keep: int) -> str:
    """``"A, B, C … +12"``: the first ``keep`` names, then how many more (all if few)."""
    names = [clean_text(a) for a in authors if clean_text(a)]
    if len(names) <= keep + 1:
        return ", ".join(names)
    return f"{', '.join(names[:keep])} … +{len(names) - keep}"


def snippet(text: str, limit: int) -> str:
    """Cut ``text`` at the last sentence end within ``limit`` characters.

    Falls back to the last word boundary plus "…" when no sentence ends in the
    second half of the limit (one very long first sentence).
    """
    text = clean_text(text)
    if len(text) <= limit:
        return text
    head = text[: limit + 1]
    best = -1
    for match in _SENTENCE_END.finditer(head):
        end = match.end()
        if end > limit:
            break
        if not head[:end].endswith(_ABBREVIATIONS):
            best = end
    if best >= limit // 2:
        return head[:best]
    cut = head[:limit].rsplit(" ", 1)[0].rstrip(",;:-–— ")
    return cut + " …"


def first_sentence(text: str, limit: int = 300) -> str:
    """The first sentence of ``text`` (abbreviations such as "e.g." do not end one),
    cleaned; cut at a word with "…" when it runs past ``limit`` characters."""
    text = clean_text(text)
    for match in _SENTENCE_END.finditer(text):
        end = match.end()
        if not text[:end].endswith(_ABBREVIATIONS):
            text = text[:end]
            break
    return truncate(text, limit)


def truncate(text: str, limit: int) -> str:
    """At most ``limit`` characters, cut at a word boundary with "…"."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1].rsplit(" ", 1)[0].rstrip(",;:-–— ")
    return cut + "…"


def format_day(value: datetime | None) -> str:
    """``"23 Nov 2026"``, locale-independent; empty when unknown."""
    if value is None:
        return ""
    months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
    return f"{value.day} {months[value.month - 1]} {value.year}"


_LIST_MARKER = re.compile(r"(\s*)((?:[-*•]|\d{1,3}[.)])\s+)?")


def wrap_text(text: str, width: int, *, first_line_offset: int = 0) -> str:
    """Wrap every line longer than ``width`` at spaces, keeping its indentation.

    Continuation lines get the line's indentation plus the width of a leading
    list marker ("- ", "12. "), so lists keep a hanging indent. Words longer
    than the width (URLs) are never broken: a line holding one stays long, and
    the transfer encoding keeps the wire format under 998 octets anyway.
    ``first_line_offset`` reserves room on the very first line for a prefix
    the caller adds later (a list number); its continuation lines are
    indented by that much.
    """
    if len(text) + first_line_offset <= width and "\n" not in text:
        return text
    out: list[str] = []
    for number, line in enumerate(text.split("\n")):
        offset = first_line_offset if number == 0 else 0
        if len(line) + offset <= width:
            out.append(line)
            continue
        match = _LIST_MARKER.match(line)
        assert match is not None  # the pattern matches the empty string
        indent, marker = match.group(1), match.group(2) or ""
        hang = " " * first_line_offset if offset else indent + " " * len(marker)
        out.extend(_greedy(line, width, offset, hang))
    return "\n".join(out)


def _greedy(line: str, width: int, offset: int, hang: str) -> list[str]:
    head = line[: len(line) - len(line.lstrip(" "))]
    words = line[len(head) :].split()
    lines: list[str] = []
    current = head + words[0] if words else head
    limit = width - offset
    for word in words[1:]:
        if len(current) + 1 + len(word) <= limit:
            current = f"{current} {word}"
        else:
            lines.append(current)
            current = hang + word
            limit = width
    lines.append(current)
    return lines
