"""What templates see: plain, already cleaned and validated values.

Templates never touch domain objects directly. Every string from a feed is
cleaned here (whitespace collapsed, controls dropped, HTML reduced to text)
and every URL is checked: only absolute http(s) URLs survive, anything else
becomes ``None`` and the template shows no link. Autoescaping then takes care
of ``<``, ``&`` and quotes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import quote

from pipeline.domain import Digest, Paper
from pipeline.render.text import (
    clean_text,
    format_day,
    plain_text,
    safe_url,
    shorten_authors,
    snippet,
)

__all__ = [
    "DigestView",
    "ItemView",
    "PaperView",
    "Section",
    "digest_view",
    "paper_view",
]


@dataclass(frozen=True, slots=True)
class PaperView:
    id: str
    title: str
    url: str | None
    pdf_url: str | None
    hf_url: str | None
    doi_url: str | None
    code_url: str | None
    authors: str
    primary_category: str
    other_categories: tuple[str, ...]
    day: str
    snippet: str
    upvotes: int | None
    journal_ref: str


@dataclass(frozen=True, slots=True)
class ItemView:
    """One entry of a digest, as ``_item.*.j2`` sees it.

    The paper part is shared by every reader. The personal part (number,
    reason, feedback links) arrives in the template as opaque slot markers
    that the renderer replaces afterwards, so templates may print these
    fields and test them for presence, nothing more.
    """

    paper: PaperView
    number: str
    reason: str
    more_url: str | None
    less_url: str | None


@dataclass(frozen=True, slots=True)
class Section:
    """One list in the digest: the matches (no title) or "Trending"."""

    title: str
    entries: Sequence[str]  # where the rendered items go (slots while the shell renders)
    omitted: int = 0  # matches that did not fit under the size cap


@dataclass(frozen=True, slots=True)
class DigestView:
    recipient_name: str
    period_label: str
    list_name: str
    count: int
    trending_count: int
    omitted: int
    unsubscribe_url: str | None
    reason_for_receiving: str
    generated_day: str
    extra: dict[str, str] = field(default_factory=dict)


def paper_view(paper: Paper, *, snippet_chars: int, max_authors: int) -> PaperView:
    categories = tuple(clean_text(c) for c in paper.categories if clean_text(c))
    code = paper.github_repo
    if code and not code.startswith(("http://", "https://")):
        code = f"https://github.com/{quote(code.strip(), safe='/')}"
    return PaperView(
        id=clean_text(paper.id),
        title=clean_text(paper.title) or clean_text(paper.id),
        url=safe_url(paper.url),
        pdf_url=safe_url(paper.pdf_url),
        hf_url=safe_url(paper.hf_url),
        doi_url=safe_url(f"https://doi.org/{quote(paper.doi.strip(), safe='/')}")
        if paper.doi
        else None,
        code_url=safe_url(code),
        authors=shorten_authors(paper.authors, max_authors),
        primary_category=categories[0] if categories else "",
        other_categories=categories[1:],
        day=format_day(paper.announced or paper.published),
        snippet=snippet(plain_text(paper.abstract), snippet_chars),
        upvotes=paper.upvotes,
        journal_ref=clean_text(paper.journal_ref or ""),
    )


def digest_view(digest: Digest, *, count: int, trending_count: int, omitted: int) -> DigestView:
    return DigestView(
        recipient_name=clean_text(digest.recipient_name or ""),
        period_label=clean_text(digest.period_label),
        list_name=clean_text(digest.list_name),
        count=count,
        trending_count=trending_count,
        omitted=omitted,
        unsubscribe_url=safe_url(digest.unsubscribe_url),
        reason_for_receiving=clean_text(digest.reason_for_receiving),
        generated_day=format_day(digest.generated_at),
        extra={clean_text(k): clean_text(v) for k, v in digest.extra.items()},
    )
