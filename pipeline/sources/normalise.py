"""Canonical identity, text cleaning and field caps: pure functions every adapter shares.

Identity (in order): the arXiv id without version when one appears anywhere (guid,
link, Atom id, Hugging Face id); else ``doi:<doi>``; else ``url:<link>``; else
``sha:<hash of title and abstract>``. Every text field is cleaned (HTML tags removed,
entities decoded, whitespace collapsed; LaTeX such as ``$a<b$`` is left verbatim) and
capped so one hostile entry cannot bloat the database.
"""

from __future__ import annotations

import hashlib
import html
import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from functools import lru_cache
from urllib.parse import quote, urlsplit

# -- caps (characters) -------------------------------------------------------------------------
TITLE_MAX = 1_000
ABSTRACT_MAX = 20_000
AUTHOR_MAX = 300
AUTHORS_MAX = 500
CATEGORY_MAX = 64
CATEGORIES_MAX = 32
URL_MAX = 2_000
DOI_MAX = 250
JOURNAL_REF_MAX = 1_000
TLDR_MAX = 400  # a source's own one-line summary (Hugging Face's ai_summary)
ID_MAX = 300
FUTURE_SLACK = timedelta(days=2)  # dates further ahead than this are treated as unknown

# -- arXiv identifiers -------------------------------------------------------------------------
# New style (2007-04 on): YYMM.NNNN (to 2014) or YYMM.NNNNN (2015 on), optional vN.
_NEW_ID = r"(?P<new>\d{2}(?:0[1-9]|1[0-2])\.\d{4,5})"
# Old style: archive(.SUBJECT-CLASS)/YYMMNNN, e.g. astro-ph/0601001, math.GT/0309136.
_OLD_ID = r"(?P<old>[a-z][a-z\-]*(?:\.[A-Z]{2})?/\d{2}(?:0[1-9]|1[0-2])\d{3})"
_VERSION = r"(?:v(?P<version>\d{1,3}))?"
_ID_BODY = rf"(?:{_NEW_ID}|{_OLD_ID}){_VERSION}"
# Contexts in which an id is trusted inside a longer string (links, guids, prose).
_ID_IN_CONTEXT = re.compile(
    r"(?:arxiv\.org/(?:abs|pdf|html|format)/|oai:arxiv\.org:|\barxiv:\s*|huggingface\.co/papers/)"
    + _ID_BODY
    + r"(?![\d])",
    re.IGNORECASE,
)
_ID_EXACT = re.compile(rf"^\s*(?:arxiv:)?{_ID_BODY}\s*$", re.IGNORECASE)
_CATEGORY = re.compile(r"^[a-z][a-z\-]*(?:\.[A-Za-z\-]+)?$")
_DOI = re.compile(r"\b(10\.\d{4,9}/[^\s\"'<>]+)", re.IGNORECASE)


def _match_id(m: re.Match[str]) -> tuple[str, int | None]:
    ident = m.group("new") or m.group("old")
    version = m.group("version")
    return ident, int(version) if version else None


def arxiv_id_in(*texts: str | None) -> tuple[str, int | None] | None:
    """The first arXiv id (without version) and its version found in ``texts``.

    A text that is exactly an id (``2305.18290v2``, ``astro-ph/0601001``) counts; inside a
    longer text only an id in a known context does (``arxiv.org/abs/``, ``oai:arXiv.org:``,
    ``arXiv:``, ``huggingface.co/papers/``), so a random number in a blog link is not one.
    """
    for text in texts:
        if not text:
            continue
        exact = _ID_EXACT.match(text)
        if exact:
            return _match_id(exact)
        found = _ID_IN_CONTEXT.search(text)
        if found:
            return _match_id(found)
    return None


def doi_in(*texts: str | None) -> str | None:
    """A DOI (lower-cased, trailing punctuation removed) from ``doi:``/``doi.org`` text."""
    for text in texts:
        if not text:
            continue
        found = _DOI.search(text)
        if found:
            return found.group(1).rstrip(".,;)").lower()[:DOI_MAX]
    return None


def canonical_id(
    *,
    arxiv_id: str | None,
    doi: str | None,
    link: str | None,
    title: str,
    abstract: str,
) -> str:
    """The canonical identity of a paper (see the module docstring)."""
    if arxiv_id:
        return arxiv_id
    if doi:
        return f"doi:{doi}"
    if link and len(link) + 4 <= ID_MAX:
        return f"url:{link}"
    basis = link or f"{title}\n{abstract}"
    return "sha:" + hashlib.sha256(basis.encode("utf-8")).hexdigest()[:40]


# -- text --------------------------------------------------------------------------------------
_HTML_TAGS = (
    "a|abbr|b|big|blockquote|body|br|center|cite|code|dd|del|div|dl|dt|em|figcaption|figure|"
    "font|h[1-6]|head|hr|html|i|img|ins|kbd|li|mark|ol|p|pre|q|s|samp|small|source|span|"
    "strike|strong|sub|sup|table|tbody|td|tfoot|th|thead|tr|tt|u|ul|var|video|audio|iframe"
)
_ATTR = r"""(?:\s+[A-Za-z_:][\w:.\-]*(?:\s*=\s*(?:"[^"]*"|'[^']*'|[^\s"'=<>`]+))?)"""
_TAG = re.compile(rf"</?(?:{_HTML_TAGS})\b{_ATTR}*\s*/?>", re.IGNORECASE)
_DROP_BLOCKS = re.compile(r"<(script|style)\b[^>]*>.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
# Characters no reader needs and an attacker can use: C0/C1 controls, bidi embeddings,
# overrides and isolates (CVE-2021-42574 class spoofing), zero-width space and BOM, and the
# private-use area (the renderer uses private-use slot markers internally).
_UNWANTED = (
    "\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f"
    "\u200b\u200e\u200f\u202a-\u202e\u2066-\u2069\ufeff\ue000-\uf8ff"
)
_CONTROL = re.compile(f"[{_UNWANTED}]")
_NEEDS_WORK = re.compile(f"[<&\u00c2\u00c3{_UNWANTED}]")


def cap(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, marked with an ellipsis when cut."""
    if len(text) <= limit:
        return text
    return text[: limit - 1].rstrip() + "…"


def clean_text(value: str | None, limit: int) -> str:
    """Plain text: known HTML tags removed, entities decoded, whitespace collapsed, capped.

    Only real HTML tags are removed (a known tag name with well-formed attributes), so
    LaTeX and comparisons such as ``$a<b$`` or ``x < y > z`` survive verbatim.
    """
    if not value:
        return ""
    if _NEEDS_WORK.search(value) is None:  # the common case: plain text
        return cap(" ".join(value.split()), limit)
    text = value
    if "<" in text:
        text = _DROP_BLOCKS.sub(" ", text)
        text = _COMMENT.sub(" ", text)
        text = _TAG.sub(" ", text)
    if "&" in text:
        text = html.unescape(text)
    if "\u00c2" in text or "\u00c3" in text:  # before the C1 strip: mojibake is made of C1
        text = _MOJIBAKE.sub(_unmangle, text)
    text = _CONTROL.sub("", text)
    return cap(" ".join(text.split()), limit)


# UTF-8 read as Latin-1 somewhere upstream ("RamÃ\xadrez" for "Ramírez"): a lead byte
# U+00C2-U+00F4 followed by continuation bytes U+0080-U+00BF. Repaired only when the
# sequence is valid UTF-8, so genuine Latin-1 text is left alone.
_MOJIBAKE = re.compile("[\u00c2-\u00f4][\u0080-\u00bf]{1,3}")


def _unmangle(found: re.Match[str]) -> str:
    chunk = found.group(0)
    try:
        return chunk.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return chunk


def clean_url(value: str | None) -> str | None:
    """An http(s) URL without surrounding whitespace, or None (other schemes are dropped)."""
    if not value:
        return None
    url = "".join(value.split())
    if not url.lower().startswith(("http://", "https://")) or len(url) > URL_MAX:
        return None
    if _CONTROL.search(url) or _URL_UNSAFE.search(url):
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if not parts.hostname or "@" in parts.netloc:  # https://arxiv.org@evil.example/ tricks
        return None
    # IRIs: percent-encode what is not ASCII, leave valid escapes and delimiters alone.
    return quote(url, safe=_URL_SAFE) if not url.isascii() else url


_URL_UNSAFE = re.compile(r'["<>\\^`{|}]')
_URL_SAFE = ":/?#[]@!$&'()*+,;=%~"


_AUTHOR_SPLIT = re.compile(r"\s*,\s*|\s+and\s+|\s*;\s*")


_INITIALS = re.compile(r"^(?:[A-Z]\.(?:-[A-Z]\.)?\s*){1,4}$")
_EMAIL_NAME = re.compile(r"^\s*[^\s@()]+@[^\s@()]+\s*\((?P<name>[^()]+)\)\s*$")


def split_authors(value: str | None) -> tuple[str, ...]:
    """Authors from one string (``A, B and C``; HTML links allowed, as in legacy arXiv RSS).

    Also understood: ``Last, I., Last2, I. J.`` (bioRxiv; becomes ``I. Last``) and the RSS
    ``email (Name)`` form.
    """
    text = clean_text(value, AUTHOR_MAX * AUTHORS_MAX)
    email_name = _EMAIL_NAME.match(text)
    if email_name:
        return clean_authors([email_name.group("name")])
    names: list[str] = []
    for part in _AUTHOR_SPLIT.split(text):
        if names and part and _INITIALS.match(part) and not _INITIALS.match(names[-1]):
            names[-1] = f"{part} {names[-1]}"
        else:
            names.append(part)
    return clean_authors(names)


def clean_authors(names: Iterable[str | None]) -> tuple[str, ...]:
    out: list[str] = []
    for name in names:
        cleaned = clean_text(name, AUTHOR_MAX)
        if cleaned and cleaned not in out:
            out.append(cleaned)
            if len(out) >= AUTHORS_MAX:
                break
    return tuple(out)


def clean_categories(values: Iterable[str | None], *, arxiv: bool) -> tuple[str, ...]:
    """Categories in order, deduplicated; for arXiv sources only valid category codes."""
    out: list[str] = []
    for value in values:
        cat_ = clean_text(value, CATEGORY_MAX)
        if not cat_ or cat_ in out or (arxiv and not _CATEGORY.match(cat_)):
            continue
        out.append(cat_)
        if len(out) >= CATEGORIES_MAX:
            break
    return tuple(out)


def primary_first(categories: tuple[str, ...], primary: str | None) -> tuple[str, ...]:
    if not primary:
        return categories
    return (primary, *(c for c in categories if c != primary))


# -- dates -------------------------------------------------------------------------------------
def parse_date(value: str | None, *, now: datetime) -> datetime | None:
    """An aware UTC datetime from RFC 822 or ISO 8601 text; None when absent or absurd.

    Naive values are taken as UTC. Dates more than two days after ``now`` are dropped:
    a feed with a broken clock must not pin its entries to the top for years.
    """
    if not value:
        return None
    return sane_date(_parse_date_text(value.strip()), now=now)


@lru_cache(maxsize=4096)
def _parse_date_text(text: str) -> datetime | None:
    """Pure and cached: a daily listing repeats one date on every entry."""
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        pass
    try:
        return parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None


def sane_date(value: datetime | None, *, now: datetime) -> datetime | None:
    if value is None:
        return None
    value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if value > now + FUTURE_SLACK or value.year < 1900:
        return None
    return value


# -- arXiv listing text ------------------------------------------------------------------------
_ANNOUNCEMENT = re.compile(
    r"^\s*arXiv:\s*(?P<id>\S+)\s+Announce\s+Type:\s*(?P<type>[\w-]+)\s*(?:Abstract:\s*)?(?P<abstract>.*)$",
    re.DOTALL | re.IGNORECASE,
)
_LEGACY_TITLE = re.compile(
    r"^(?P<title>.*?)\.?\s*\(arXiv:(?P<id>\S+?)\s*\[(?P<cat>[^\]]+)\]"
    r"\s*(?P<flag>UPDATED|CROSS LISTED)?\s*\)\s*$",
    re.DOTALL,
)


def split_announcement(description: str | None) -> tuple[str, str, str] | None:
    """``(id with version, announce type, abstract)`` from a current arXiv RSS description.

    The description reads ``arXiv:2401.00001v2 Announce Type: replace Abstract: ...``.
    """
    if not description:
        return None
    found = _ANNOUNCEMENT.match(description)
    if not found:
        return None
    return found.group("id"), found.group("type").lower(), found.group("abstract")


def split_legacy_title(title: str | None) -> tuple[str, str, str, str] | None:
    """``(title, id with version, category, announce type)`` from a pre-2024 arXiv RSS title.

    Those titles read ``Title. (arXiv:1209.2411v1 [math.PR] UPDATED)``; ``UPDATED`` is a
    replacement and ``CROSS LISTED`` a cross-list.
    """
    if not title:
        return None
    found = _LEGACY_TITLE.match(title)
    if not found:
        return None
    flag = found.group("flag")
    kind = "replace" if flag == "UPDATED" else "cross" if flag == "CROSS LISTED" else "new"
    return found.group("title"), found.group("id"), found.group("cat").strip(), kind
