"""Any RSS 0.9x/1.0/2.0 or Atom feed, through feedparser (the only module that imports it).

feedparser is lenient: an ill-formed document still yields the entries it could read, and
the problem is recorded. Zero entries from an ill-formed or unrecognised document is a
failure, never "the feed is empty". feedparser only ever receives bytes that went through
:func:`pipeline.sources.xmlsafety.prepare_xml`, wrapped in a stream so it can never take
them for a file name or URL to open.
"""

from __future__ import annotations

import io
import time
from calendar import timegm
from datetime import UTC, datetime
from typing import Any

import feedparser

from pipeline.errors import SourceError
from pipeline.sources import normalise as n
from pipeline.sources.listing import ParseResult, RawEntry, build_result
from pipeline.sources.xmlsafety import prepare_xml


def _date(value: Any) -> datetime | None:
    if isinstance(value, time.struct_time):
        return datetime.fromtimestamp(timegm(value), tz=UTC)
    return None


def _text(entry: Any, key: str) -> str | None:
    value = entry.get(key)
    return value if isinstance(value, str) else None


def _abstract(entry: Any) -> str | None:
    summary = _text(entry, "summary")
    if summary:
        return summary
    for content in entry.get("content") or ():
        value = content.get("value")
        if isinstance(value, str) and value:
            return value
    return None


def _authors(entry: Any) -> tuple[str, ...]:
    names: list[str] = []
    for author in entry.get("authors") or ():
        name = author.get("name") if isinstance(author, dict) else None
        if isinstance(name, str) and name.strip():
            names.append(name)
    single = _text(entry, "author")
    if len(names) <= 1 and single:
        # One author string (RSS <author>, dc:creator): split it ourselves. feedparser's own
        # "email (Name)" split miscounts non-ASCII names.
        return n.split_authors(single)
    return tuple(names)


def entry_to_raw(entry: Any, *, arxiv: bool = False) -> RawEntry:
    """The fields of one feedparser entry; arXiv listing conventions are applied when seen."""
    title = _text(entry, "title")
    abstract = _abstract(entry)
    link = _text(entry, "link")
    pdf = None
    for candidate in entry.get("links") or ():
        if candidate.get("type") == "application/pdf" or candidate.get("title") == "pdf":
            pdf = candidate.get("href")
    guid = _text(entry, "id")
    raw = RawEntry(
        title=title,
        abstract=abstract,
        authors=_authors(entry),
        categories=tuple(t.get("term") for t in entry.get("tags") or () if t.get("term")),
        link=link,
        pdf_link=pdf,
        id_hints=(guid,),
        doi=_text(entry, "arxiv_doi") or _text(entry, "prism_doi") or _text(entry, "dc_identifier"),
        journal_ref=_text(entry, "arxiv_journal_reference") or _text(entry, "arxiv_journal_ref"),
        published=_date(entry.get("published_parsed")) or _date(entry.get("updated_parsed")),
        announce_type=_text(entry, "arxiv_announce_type"),
        arxiv=arxiv,
    )
    announcement = n.split_announcement(abstract)
    if announcement:
        ident, kind, rest = announcement
        raw.id_hints = (f"arXiv:{ident}", guid)
        raw.announce_type = raw.announce_type or kind
        raw.abstract = rest
        raw.arxiv = True
    legacy = n.split_legacy_title(title) if arxiv else None
    if legacy:
        raw.title, ident, category, kind = legacy
        raw.id_hints = (f"arXiv:{ident}", guid)
        raw.categories = (category,)
        raw.announce_type = kind
    if raw.arxiv and raw.announce_type:
        raw.announced = raw.published
    return raw


def parse_feed(
    body: bytes,
    *,
    source: str,
    content_type: str | None = None,
    now: datetime,
    arxiv: bool = False,
    prepared: bytes | None = None,
) -> ParseResult:
    """Papers from any RSS/Atom document. Raises SourceError when it yields nothing usable."""
    data = (
        prepared
        if prepared is not None
        else prepare_xml(body, source=source, content_type=content_type)
    )
    parsed = feedparser.parse(io.BytesIO(data), sanitize_html=False)
    problems: list[str] = []
    broken = bool(parsed.get("bozo"))
    reason = str(parsed.get("bozo_exception") or "unknown problem")[:300]
    if not parsed.entries:
        if broken:
            raise SourceError(source, f"the document is not a readable feed ({reason})")
        if not parsed.get("version"):
            raise SourceError(source, "the document is not an RSS or Atom feed")
    elif broken:
        problems.append(f"ill-formed feed ({reason}); kept the entries that could be read")
    raws = [entry_to_raw(entry, arxiv=arxiv) for entry in parsed.entries]
    return build_result(raws, now=now, problems=problems)
