"""arXiv listings from rss.arxiv.org: RSS 2.0 (current), RSS 1.0 (legacy) and Atom.

Current RSS 2.0 items carry ``guid`` ``oai:arXiv.org:<id>v<n>``, a description
``arXiv:<id>v<n> Announce Type: <type> Abstract: ...``, one ``<category>`` per category,
``arxiv:announce_type``, ``dc:creator`` (comma-separated), optional
``arxiv:journal_reference`` and ``arxiv:DOI``, and ``pubDate`` at the listing's midnight.
An empty weekend listing (``skipDays``) is a valid empty result. Legacy RSS 1.0 titles
read ``Title. (arXiv:1209.2411v1 [math.PR] UPDATED)``.
"""

from __future__ import annotations

from datetime import datetime

from pipeline.errors import SourceError
from pipeline.sources import normalise as n
from pipeline.sources.arxiv_api import parse_atom_root, parse_xml_listing
from pipeline.sources.listing import ParseResult, RawEntry, build_result
from pipeline.sources.xmltree import ARXIV, ATOM, DC, RDF, RSS1, Element


def _rss2_item(item: Element, *, listing_date: datetime | None, now: datetime) -> RawEntry:
    guid = item.findtext("guid")
    description = item.findtext("description")
    announced = n.parse_date(item.findtext("pubDate"), now=now) or listing_date
    raw = RawEntry(
        title=item.findtext("title"),
        abstract=description,
        authors=n.split_authors(item.findtext(f"{DC}creator")),
        categories=tuple(c.text or "" for c in item.iterfind("category")),
        link=item.findtext("link"),
        id_hints=(guid,),
        doi=item.findtext(f"{ARXIV}DOI") or item.findtext(f"{ARXIV}doi"),
        journal_ref=item.findtext(f"{ARXIV}journal_reference"),
        announced=announced,
        announce_type=item.findtext(f"{ARXIV}announce_type"),
        arxiv=True,
    )
    announcement = n.split_announcement(description)
    if announcement:
        version_id, kind, raw.abstract = announcement
        raw.id_hints = (guid, f"arXiv:{version_id}")
        raw.announce_type = raw.announce_type or kind
    if raw.announce_type and raw.announce_type.strip() == "new":
        raw.published = announced  # first announcement = publication on arXiv
    return raw


def _rss1_item(item: Element, *, listing_date: datetime | None) -> RawEntry:
    title = item.findtext(f"{RSS1}title")
    raw = RawEntry(
        title=title,
        abstract=item.findtext(f"{RSS1}description"),
        authors=n.split_authors(item.findtext(f"{DC}creator")),
        link=item.findtext(f"{RSS1}link"),
        id_hints=(item.get(f"{RDF}about"),),
        announced=listing_date,
        arxiv=True,
    )
    legacy = n.split_legacy_title(title)
    if legacy:
        raw.title, version_id, category, raw.announce_type = legacy
        raw.id_hints = (f"arXiv:{version_id}", *raw.id_hints)
        raw.categories = (category,)
        if raw.announce_type == "new":
            raw.published = listing_date
    return raw


def parse_root(root: Element, *, source: str, now: datetime) -> ParseResult:
    if root.tag == "rss":
        channel = root.find("channel")
        if channel is None:
            raise SourceError(source, "an RSS document without a <channel>")
        listing_date = n.parse_date(channel.findtext("pubDate"), now=now)
        items = channel.findall("item")
        raws = [_rss2_item(i, listing_date=listing_date, now=now) for i in items]
        return build_result(raws, now=now)
    if root.tag == f"{RDF}RDF":
        channel = root.find(f"{RSS1}channel")
        listing_date = n.parse_date(
            channel.findtext(f"{DC}date") if channel is not None else None, now=now
        )
        raws = [_rss1_item(i, listing_date=listing_date) for i in root.iterfind(f"{RSS1}item")]
        return build_result(raws, now=now)
    if root.tag == f"{ATOM}feed":
        return parse_atom_root(root, source=source, now=now)
    raise SourceError(source, f"not an arXiv listing: the root element is <{root.tag}>")


def parse(
    body: bytes, *, source: str, content_type: str | None = None, now: datetime
) -> ParseResult:
    return parse_xml_listing(
        body, source=source, content_type=content_type, now=now, read_root=parse_root
    )
