"""Source adapters: one per listing kind, each turning a fetched document into ``Paper``s.

``parse_listing`` is pure (bytes in, papers out) and the only entry point the rest of
Paperpost uses; fetching lives in :mod:`pipeline.ingest.fetch`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from pipeline.errors import SourceError
from pipeline.sources import arxiv_api, arxiv_rss, feed, hf_daily
from pipeline.sources.listing import ParseResult

__all__ = ["SOURCE_KINDS", "ParseResult", "parse_listing"]

SOURCE_KINDS = ("arxiv-rss", "arxiv-api", "hf-daily", "feed")

_Parser = Callable[..., ParseResult]
_PARSERS: dict[str, _Parser] = {
    "arxiv-rss": arxiv_rss.parse,
    "arxiv-api": arxiv_api.parse,
    "hf-daily": hf_daily.parse,
    "feed": feed.parse_feed,
}


def parse_listing(
    kind: str, body: bytes, *, source: str, content_type: str | None = None, now: datetime
) -> ParseResult:
    """Normalised papers from one fetched document of ``kind`` (one of ``SOURCE_KINDS``).

    Raises SourceError when the document is unusable: hostile XML, the arXiv API error
    feed, or an ill-formed document with zero entries. A valid empty listing (arXiv on a
    weekend) returns no papers and no problems.
    """
    parser = _PARSERS.get(kind)
    if parser is None:
        raise SourceError(source, f"unknown source kind {kind!r}; expected one of {SOURCE_KINDS}")
    if not body.strip():
        raise SourceError(source, "the document is empty (0 bytes of content)")
    return parser(body, source=source, content_type=content_type, now=now)
