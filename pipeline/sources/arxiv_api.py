"""arXiv API (export.arxiv.org/api/query) Atom responses, and Atom-shaped arXiv listings.

Handles paging metadata (``opensearch:totalResults``), the error feed (one entry titled
"Error" whose id points into ``/api/errors``, served with HTTP 400) as a clear source
error, old-style ids (``astro-ph/0601001``) and versioned ids.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from pipeline.errors import SourceError
from pipeline.sources import normalise as n
from pipeline.sources.feed import parse_feed
from pipeline.sources.listing import ParseResult, RawEntry, build_result
from pipeline.sources.xmlsafety import prepare_xml
from pipeline.sources.xmltree import (
    ARXIV,
    ATOM,
    DC,
    OPENSEARCH,
    Element,
    ParseError,
    parse_tree,
    text_of,
)


def atom_entry(entry: Element, *, now: datetime) -> RawEntry:
    """One arXiv Atom entry (API result or rss.arxiv.org/atom announcement)."""
    ident = text_of(entry, f"{ATOM}id")
    summary = text_of(entry, f"{ATOM}summary")
    link = pdf = None
    for item in entry.iterfind(f"{ATOM}link"):
        if item.get("title") == "pdf" or item.get("type") == "application/pdf":
            pdf = item.get("href")
        elif item.get("rel", "alternate") == "alternate" and link is None:
            link = item.get("href")
    authors = [text_of(a, f"{ATOM}name") or "" for a in entry.iterfind(f"{ATOM}author")]
    creators = text_of(entry, f"{DC}creator")
    primary = entry.find(f"{ARXIV}primary_category")
    published = n.parse_date(text_of(entry, f"{ATOM}published"), now=now)
    raw = RawEntry(
        title=text_of(entry, f"{ATOM}title"),
        abstract=summary,
        authors=tuple(authors) or n.split_authors(creators),
        categories=tuple(c.get("term") or "" for c in entry.iterfind(f"{ATOM}category")),
        primary_category=primary.get("term") if primary is not None else None,
        link=link,
        pdf_link=pdf,
        id_hints=(ident,),
        doi=text_of(entry, f"{ARXIV}doi") or text_of(entry, f"{ARXIV}DOI"),
        journal_ref=text_of(entry, f"{ARXIV}journal_ref")
        or text_of(entry, f"{ARXIV}journal_reference"),
        published=published,
        announce_type=text_of(entry, f"{ARXIV}announce_type"),
        arxiv=True,
    )
    announcement = n.split_announcement(summary)
    if announcement:
        version_id, kind, raw.abstract = announcement
        raw.id_hints = (f"arXiv:{version_id}", ident)
        raw.announce_type = raw.announce_type or kind
    if raw.announce_type:  # an announcement feed: its date is the announcement
        raw.announced = published
    return raw


def _int(text: str | None) -> int | None:
    try:
        return int((text or "").strip())
    except ValueError:
        return None


def error_detail(root: Element) -> str | None:
    """The message of the arXiv API's error feed (one entry titled "Error"), else None."""
    entries = root.findall(f"{ATOM}entry")
    if len(entries) != 1:
        return None
    entry = entries[0]
    ident = text_of(entry, f"{ATOM}id") or ""
    if (text_of(entry, f"{ATOM}title") or "").strip() != "Error" or "/api/errors" not in ident:
        return None
    return n.clean_text(text_of(entry, f"{ATOM}summary"), 300) or ident


def check_error_feed(root: Element, *, source: str) -> None:
    """Raise SourceError for the arXiv API's error feed."""
    detail = error_detail(root)
    if detail is not None:
        raise SourceError(source, f"the arXiv API answered with an error: {detail}")


def api_error(body: bytes) -> str | None:
    """The message of an arXiv API error feed in ``body``, or None if it is not one."""
    try:
        return error_detail(parse_tree(prepare_xml(body, source="arxiv-api")))
    except (SourceError, ParseError):
        return None


def parse_atom_root(root: Element, *, source: str, now: datetime) -> ParseResult:
    if root.tag != f"{ATOM}feed":
        raise SourceError(source, f"expected an Atom <feed>, found <{root.tag}>")
    check_error_feed(root, source=source)
    raws = [atom_entry(e, now=now) for e in root.iterfind(f"{ATOM}entry")]
    total = _int(text_of(root, f"{OPENSEARCH}totalResults"))
    return build_result(raws, now=now, total_results=total)


RootReader = Callable[..., ParseResult]


def parse_xml_listing(
    body: bytes, *, source: str, content_type: str | None, now: datetime, read_root: RootReader
) -> ParseResult:
    """Safety pass, then the strict tree for ``read_root``; an ill-formed document falls
    back to feedparser's lenient reading, keeping whatever entries are valid."""
    data = prepare_xml(body, source=source, content_type=content_type)
    try:
        root = parse_tree(data)
    except ParseError as exc:
        result = parse_feed(body, source=source, now=now, arxiv=True, prepared=data)
        result.problems.insert(0, f"not well-formed XML ({exc}); read leniently")
        return result
    return read_root(root, source=source, now=now)


def parse(
    body: bytes, *, source: str, content_type: str | None = None, now: datetime
) -> ParseResult:
    return parse_xml_listing(
        body, source=source, content_type=content_type, now=now, read_root=parse_atom_root
    )
