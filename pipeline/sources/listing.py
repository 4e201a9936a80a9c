"""What every adapter produces: raw entry fields in, normalised ``Paper`` records out."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import get_args

from pipeline.domain import AnnounceType, Paper
from pipeline.sources import normalise as n

ANNOUNCE_TYPES: frozenset[str] = frozenset(get_args(AnnounceType))
MAX_ENTRIES = 50_000  # per document; arXiv pages are at most 2,000, daily listings ~1,500


@dataclass(frozen=True)
class ParseResult:
    """The papers of one document, plus what went wrong without making it unusable."""

    papers: list[Paper]
    problems: list[str]
    skipped: int
    total_results: int | None = None  # arXiv API: opensearch:totalResults


@dataclass
class RawEntry:
    """One entry's fields as the document spells them, before cleaning."""

    title: str | None = None
    abstract: str | None = None
    authors: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    primary_category: str | None = None
    link: str | None = None
    pdf_link: str | None = None
    hf_link: str | None = None
    id_hints: tuple[str | None, ...] = ()  # guid, Atom id, HF id: searched for an arXiv id
    version: int | None = None
    doi: str | None = None
    journal_ref: str | None = None
    published: datetime | None = None
    announced: datetime | None = None
    announce_type: str | None = None
    upvotes: int | None = None
    github_repo: str | None = None
    github_stars: int | None = None
    tldr: str | None = None  # the source's own one-line summary
    arxiv: bool = False  # categories are arXiv codes (validated)
    extra_problems: list[str] = field(default_factory=list)


def _announce_type(value: str | None) -> AnnounceType | None:
    text = (value or "").strip().lower()
    return text if text in ANNOUNCE_TYPES else None  # type: ignore[return-value]


def _count(value: int | None) -> int | None:
    return value if value is not None and 0 <= value < 2**31 else None


def make_paper(raw: RawEntry, *, now: datetime) -> Paper | None:
    """A normalised ``Paper``, or None when the entry has neither title nor link."""
    title = n.clean_text(raw.title, n.TITLE_MAX)
    link = n.clean_url(raw.link)
    if not title and not link:
        return None
    abstract = n.clean_text(raw.abstract, n.ABSTRACT_MAX)
    found = n.arxiv_id_in(*raw.id_hints, link)
    arxiv_id, hinted_version = found if found else (None, None)
    version = raw.version if raw.version is not None else hinted_version
    doi = n.doi_in(raw.doi) if raw.doi else None
    paper_id = n.canonical_id(arxiv_id=arxiv_id, doi=doi, link=link, title=title, abstract=abstract)
    primary = n.clean_categories([raw.primary_category], arxiv=raw.arxiv)
    categories = n.primary_first(
        n.clean_categories(raw.categories, arxiv=raw.arxiv), primary[0] if primary else None
    )
    url = link
    pdf_url = n.clean_url(raw.pdf_link)
    if arxiv_id:
        url = f"https://arxiv.org/abs/{arxiv_id}" if not link or "arxiv.org" in link else link
        pdf_url = pdf_url or f"https://arxiv.org/pdf/{arxiv_id}"
    journal_ref = n.clean_text(raw.journal_ref, n.JOURNAL_REF_MAX) or None
    github = n.clean_url(raw.github_repo)
    return Paper(
        id=paper_id,
        title=title or (link or paper_id),
        abstract=abstract,
        authors=n.clean_authors(raw.authors),
        categories=categories,
        url=url,
        pdf_url=pdf_url,
        hf_url=n.clean_url(raw.hf_link),
        version=version if version is not None and 0 < version < 1000 else None,
        published=n.sane_date(raw.published, now=now),
        announced=n.sane_date(raw.announced, now=now),
        announce_type=_announce_type(raw.announce_type),
        doi=doi,
        journal_ref=journal_ref,
        upvotes=_count(raw.upvotes),
        github_repo=github,
        github_stars=_count(raw.github_stars),
        tldr=n.clean_text(raw.tldr, n.TLDR_MAX) or None,
    )


def build_result(
    raws: list[RawEntry],
    *,
    now: datetime,
    problems: list[str] | None = None,
    skipped: int = 0,
    total_results: int | None = None,
) -> ParseResult:
    """Normalise ``raws``; one paper per canonical id (the highest version wins)."""
    problems = list(problems or [])
    papers: dict[str, Paper] = {}
    without_identity = duplicates = 0
    for raw in raws[:MAX_ENTRIES]:
        problems.extend(raw.extra_problems)
        paper = make_paper(raw, now=now)
        if paper is None:
            without_identity += 1
            continue
        seen = papers.get(paper.id)
        if seen is not None:
            duplicates += 1
            if (paper.version or 0) <= (seen.version or 0):
                continue
        papers[paper.id] = paper
    if len(raws) > MAX_ENTRIES:
        problems.append(f"{len(raws) - MAX_ENTRIES} entries past the cap of {MAX_ENTRIES} ignored")
        skipped += len(raws) - MAX_ENTRIES
    if without_identity:
        problems.append(f"{without_identity} entries with neither title nor link skipped")
    if duplicates:
        problems.append(f"{duplicates} duplicate entries (same paper listed twice) merged")
    return ParseResult(
        papers=list(papers.values()),
        problems=problems,
        skipped=skipped + without_identity + duplicates,
        total_results=total_results,
    )
