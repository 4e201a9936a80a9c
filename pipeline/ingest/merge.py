"""Merging the same paper seen twice: pure, field by field.

The record with the higher (version, has arXiv categories) is authoritative for the
bibliographic fields (title, abstract, authors, links, DOI, journal reference); the other
only fills gaps. So a ``replace`` announcement or a vN+1 updates the one paper (a new
version, never a new paper), an older listing seen late cannot roll a paper back, and a
Hugging Face entry never overwrites arXiv's metadata but contributes its upvotes, page,
GitHub repository and one-line summary ``tldr`` (the latest counts win; the latest
non-empty ``tldr`` wins, so a source without one never erases it).

Categories are the union (stored order, then new ones) with the authoritative record's
primary first. ``published`` keeps the earliest date. ``announced``/``announce_type``
follow the latest announcement, so a cross-list announced today makes the paper new to
that category's readers today. ``first_seen`` is the store's; ``sources`` accumulates.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from pipeline.domain import Paper


def _rank(paper: Paper) -> tuple[int, bool]:
    return (paper.version or 0, bool(paper.categories))


def _earliest(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None or b is None:
        return a or b
    return min(a, b)


def _union(first: tuple[str, ...], second: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys((*first, *second)))


def merge_paper(old: Paper | None, new: Paper, *, source: str) -> Paper:
    """``new`` folded into the stored ``old`` (None when the paper is new)."""
    if old is None:
        return replace(new, sources=_union(new.sources, (source,)))
    if old.id != new.id:
        raise ValueError(f"cannot merge different papers {old.id!r} and {new.id!r}")
    main, other = (new, old) if _rank(new) >= _rank(old) else (old, new)
    if new.announced is not None and (old.announced is None or new.announced >= old.announced):
        announced, announce_type = new.announced, new.announce_type
    elif old.announced is not None:
        announced, announce_type = old.announced, old.announce_type
    else:
        announced, announce_type = None, new.announce_type or old.announce_type
    return Paper(
        id=old.id,
        title=main.title or other.title,
        abstract=main.abstract or other.abstract,
        authors=main.authors or other.authors,
        categories=_union(main.categories[:1], _union(old.categories, new.categories)),
        url=main.url or other.url,
        pdf_url=main.pdf_url or other.pdf_url,
        hf_url=new.hf_url or old.hf_url,
        version=max(old.version or 0, new.version or 0) or None,
        published=_earliest(old.published, new.published),
        announced=announced,
        announce_type=announce_type,
        doi=main.doi or other.doi,
        journal_ref=main.journal_ref or other.journal_ref,
        upvotes=new.upvotes if new.upvotes is not None else old.upvotes,
        github_repo=new.github_repo or old.github_repo,
        github_stars=new.github_stars if new.github_stars is not None else old.github_stars,
        tldr=new.tldr or old.tldr,
        first_seen=old.first_seen,
        sources=_union(old.sources, (source,)),
    )


def merge_batch(stored: dict[str, Paper], papers: list[Paper], *, source: str) -> list[Paper]:
    """Every paper of one listing merged with its stored record (if any)."""
    return [merge_paper(stored.get(p.id), p, source=source) for p in papers]
