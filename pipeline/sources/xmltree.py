"""A fast element tree for the arXiv adapters (stdlib expat, after the safety pass).

The arXiv listings are large (a busy day is ~1,500 entries, an API page up to 2,000), so
their adapters read them with ElementTree, which is several times faster than
feedparser (bench/INGEST.md); a document ElementTree rejects as ill-formed falls back
to feedparser's lenient parser in :mod:`pipeline.sources.feed`.
"""

from __future__ import annotations

from xml.etree.ElementTree import Element, ParseError, XMLParser

ATOM = "{http://www.w3.org/2005/Atom}"
ARXIV = "{http://arxiv.org/schemas/atom}"
DC = "{http://purl.org/dc/elements/1.1/}"
RDF = "{http://www.w3.org/1999/02/22-rdf-syntax-ns#}"
RSS1 = "{http://purl.org/rss/1.0/}"
OPENSEARCH = "{http://a9.com/-/spec/opensearch/1.1/}"

__all__ = [
    "ARXIV",
    "ATOM",
    "DC",
    "OPENSEARCH",
    "RDF",
    "RSS1",
    "Element",
    "ParseError",
    "parse_tree",
]


def parse_tree(data: bytes) -> Element:
    """The root of ``data``. Raises ParseError if ill-formed.

    ``data`` must come from :func:`pipeline.sources.xmlsafety.prepare_xml`, which refuses
    every entity declaration and removes every DOCTYPE, so expat here never sees a DTD:
    nothing can expand and nothing is fetched. That is why the C-accelerated stdlib parser
    is safe here (defusedxml's Python-level hooks cost five times the parse itself).
    """
    parser = XMLParser()  # noqa: S314 (safe: see above)
    parser.feed(data)
    root: Element = parser.close()
    return root


def text_of(element: Element | None, path: str) -> str | None:
    if element is None:
        return None
    found = element.find(path)
    if found is None:
        return None
    return "".join(found.itertext())
