"""What templates see: plain, already cleaned and validated values.

Templates never touch domain objects directly. Every string from a feed is
cleaned here (whitespace collapsed, controls dropped, HTML reduced to text)
and every URL is checked: only absolute http(s) URLs survive, anything else
becomes ``None`` and the template shows no link. Autoescaping then takes care
of ``<``, ``&`` and quotes.

Every paper gets at least one link. Its own abstract, PDF, Hugging Face, DOI
and code links where the source gave them; else links built from its best id
(an arXiv id gives the abstract and PDF pages, a DOI its resolver); else, for a
paper known only by title and abstract, an arXiv search for its exact title,
labelled as a search so nobody mistakes it for the paper's page.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import quote, urlencode

from pipeline.domain import Digest, DigestItem, Paper
from pipeline.render.text import (
    clean_text,
    first_sentence,
    format_day,
    plain_text,
    safe_url,
    shorten_authors,
    snippet,
    truncate,
)

__all__ = [
    "DigestView",
    "ItemView",
    "Link",
    "PaperView",
    "Section",
    "digest_view",
    "item_view",
    "paper_view",
    "reason_kind",
]

# A canonical id without a scheme prefix is an arXiv id (new style or archive/number).
_ARXIV_ID = re.compile(r"(\d{4}\.\d{4,5}|[a-z][a-zA-Z.-]*/\d{7})")
SEARCH_LABEL = "Search arXiv for this title"


@dataclass(frozen=True, slots=True)
class Link:
    label: str
    url: str
    search: bool = False  # a search for the paper, not the paper's own page


@dataclass(frozen=True, slots=True)
class PaperView:
    id: str
    title: str
    url: str | None  # the title's link: abstract page, else the first link there is
    pdf_url: str | None
    hf_url: str | None
    doi_url: str | None
    code_url: str | None
    links: tuple[Link, ...]  # never empty: at least a title search
    authors: str  # "A, B, C … +12"
    author_names: tuple[str, ...]  # every name, cleaned, for templates that loop
    categories: tuple[str, ...]
    primary_category: str
    other_categories: tuple[str, ...]
    day: str
    tldr: str  # the source's own one-line summary, else the abstract's first sentence
    snippet: str  # the abstract's opening (after its first sentence when that is the TL;DR)
    upvotes: int | None
    journal_ref: str


@dataclass(frozen=True, slots=True)
class ItemView:
    """One entry of a digest, as ``_item.*.j2`` sees it."""

    paper: PaperView
    number: int  # 1, 2 ... in the order the digest shows them
    anchor: str  # the HTML id the summary at the top links to ("paper-1")
    reason: str  # the matcher's reason line
    why: str  # one word: query, author, category, similar, trending, match
    more_url: str | None
    less_url: str | None
    trending: bool


@dataclass(frozen=True, slots=True)
class Section:
    """One list in the digest: the matches (no title when ungrouped), a group, "Trending"."""

    title: str
    items: Sequence[ItemView]
    omitted: int = 0  # matches that did not fit under the size cap


@dataclass(frozen=True, slots=True)
class DigestView:
    recipient_name: str
    period_label: str
    list_name: str
    count: int  # matched papers shown
    trending_count: int
    total: int  # count + trending_count
    omitted: int
    headline: str  # "7 new papers for Monday 23 November 2026"
    preheader: str  # the inbox preview line
    unsubscribe_url: str | None
    reason_for_receiving: str
    generated_day: str
    manage_url: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


def _arxiv_id(paper_id: str) -> str | None:
    match = _ARXIV_ID.fullmatch(paper_id)
    return match.group(0) if match else None


def title_search_url(title: str) -> str:
    """An arXiv search for ``title`` as an exact phrase in titles."""
    phrase = " ".join(title.replace('"', " ").split())
    return "https://arxiv.org/search/?" + urlencode(
        {"query": f'"{phrase}"', "searchtype": "title"}, quote_via=quote
    )


def _links(paper: Paper) -> tuple[str | None, str | None, str | None, str | None]:
    """Abstract, PDF, DOI and source links: the paper's own, else from its best id."""
    url, pdf = safe_url(paper.url), safe_url(paper.pdf_url)
    arxiv = _arxiv_id(paper.id)
    if arxiv is not None:
        url = url or f"https://arxiv.org/abs/{arxiv}"
        pdf = pdf or f"https://arxiv.org/pdf/{arxiv}"
    doi = paper.doi or (paper.id[4:] if paper.id.startswith("doi:") else None)
    doi_url = safe_url(f"https://doi.org/{quote(doi.strip(), safe='/')}") if doi else None
    if url is None and paper.id.startswith("url:"):
        url = safe_url(paper.id[4:])
    return url, pdf, doi_url, safe_url(paper.hf_url)


def paper_view(paper: Paper, *, snippet_chars: int, max_authors: int) -> PaperView:
    categories = tuple(clean_text(c) for c in paper.categories if clean_text(c))
    code = paper.github_repo
    if code and not code.startswith(("http://", "https://")):
        code = f"https://github.com/{quote(code.strip(), safe='/')}"
    code_url = safe_url(code)
    title = clean_text(paper.title) or clean_text(paper.id)
    url, pdf_url, doi_url, hf_url = _links(paper)
    named = [
        ("Abstract", url),
        ("PDF", pdf_url),
        ("Hugging Face", hf_url),
        ("DOI", doi_url),
        ("Code", code_url),
    ]
    links = tuple(Link(label, href) for label, href in named if href)
    if not any(href for _, href in named[:4]):  # nothing that is the paper's own page
        links = (Link(SEARCH_LABEL, title_search_url(title), search=True), *links)
    abstract = plain_text(paper.abstract)
    tldr = plain_text(paper.tldr or "")
    if tldr:  # the source's own summary: the abstract is shown from its start
        rest = abstract
    else:
        tldr = first_sentence(abstract)
        rest = abstract[len(tldr) :].strip() if abstract.startswith(tldr) else ""
    return PaperView(
        id=clean_text(paper.id),
        title=title,
        url=url or links[0].url,
        pdf_url=pdf_url,
        hf_url=hf_url,
        doi_url=doi_url,
        code_url=code_url,
        links=links,
        authors=shorten_authors(paper.authors, max_authors),
        author_names=tuple(n for n in (clean_text(a) for a in paper.authors) if n),
        categories=categories,
        primary_category=categories[0] if categories else "",
        other_categories=categories[1:],
        day=format_day(paper.announced or paper.published),
        tldr=tldr,
        snippet=snippet(rest, snippet_chars) if rest else "",
        upvotes=paper.upvotes,
        journal_ref=clean_text(paper.journal_ref or ""),
    )


# The reason line's first part says what admitted the paper (pipeline/match/reasons.py
# writes them in this order: query, authors, categories, liked, about, trending).
_KINDS = (
    ("matched", "query"),
    ("by ", "author"),
    ("followed author", "author"),
    ("in ", "category"),
    ("category", "category"),
    ("similar to", "similar"),
    ("close to", "similar"),
    ("trending", "trending"),
)
GROUP_TITLES = {
    "query": "Your query",
    "author": "Your authors",
    "category": "Your categories",
    "similar": "Similar to what you liked",
    "match": "Other matches",
}


def reason_kind(reason: str, *, trending: bool = False) -> str:
    """One word for what admitted a paper: query, author, category, similar, trending, match."""
    if trending:
        return "trending"
    text = reason.strip().lower()
    return next((kind for prefix, kind in _KINDS if text.startswith(prefix)), "match")


def item_view(
    item: DigestItem, paper: PaperView, number: int, *, trending: bool = False
) -> ItemView:
    reason = clean_text(item.reason)
    return ItemView(
        paper=paper,
        number=number,
        anchor=f"paper-{number}",
        reason=reason,
        why=reason_kind(reason, trending=trending),
        more_url=safe_url(item.more_url),
        less_url=safe_url(item.less_url),
        trending=trending,
    )


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def headline(count: int, trending_count: int, period_label: str) -> str:
    """What the digest holds, counted honestly: never "0" when it carries papers."""
    if count:
        return f"{_plural(count + trending_count, 'new paper')} for {period_label}"
    if trending_count:
        return f"{_plural(trending_count, 'trending paper')} for {period_label}"
    return f"No new papers for {period_label}"


def digest_view(
    digest: Digest, *, count: int, trending_count: int, omitted: int, titles: Sequence[str]
) -> DigestView:
    """``titles``: the shown papers' titles in order, for the preheader."""
    period = clean_text(digest.period_label)
    head = headline(count, trending_count, period)
    preview = " · ".join(titles[:3])
    return DigestView(
        recipient_name=clean_text(digest.recipient_name or ""),
        period_label=period,
        list_name=clean_text(digest.list_name),
        count=count,
        trending_count=trending_count,
        total=count + trending_count,
        omitted=omitted,
        headline=head,
        preheader=truncate(f"{head}: {preview}" if preview else head, 200),
        unsubscribe_url=safe_url(digest.unsubscribe_url),
        reason_for_receiving=clean_text(digest.reason_for_receiving),
        generated_day=format_day(digest.generated_at),
        manage_url=safe_url(digest.manage_url),
        extra={clean_text(k): clean_text(v) for k, v in digest.extra.items()},
    )
