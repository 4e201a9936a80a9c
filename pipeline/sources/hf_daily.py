"""Hugging Face Daily Papers: the JSON listing of ``/api/daily_papers`` (optionally ``?date=``).

Each element holds ``paper`` with ``id`` (the arXiv id), ``title``, ``summary``,
``authors`` (objects with ``name``), ``upvotes`` (trending), ``publishedAt``,
``submittedOnDailyAt`` and, when present, ``githubRepo``/``githubStars`` and (newer
responses) ``ai_summary``, a one-sentence summary that becomes the paper's ``tldr``.
Element-level ``title``/``summary``/``ai_summary`` fill in when the ``paper`` object lacks
them.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from pipeline.errors import SourceError
from pipeline.sources import normalise as n
from pipeline.sources.listing import ParseResult, RawEntry, build_result
from pipeline.sources.xmlsafety import decode_document

HF_PAPERS = "https://huggingface.co/papers/"


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _entry(item: Any, *, now: datetime) -> RawEntry | None:
    if not isinstance(item, dict):
        return None
    nested = item.get("paper")
    paper: dict[str, Any] = nested if isinstance(nested, dict) else {}
    ident = _str(paper.get("id")) or _str(item.get("id"))
    names = [
        _str(a.get("name")) or ""
        for a in paper.get("authors") or ()
        if isinstance(a, dict) and not a.get("hidden")
    ]
    found = n.arxiv_id_in(ident)
    hf_link = f"{HF_PAPERS}{ident}" if ident and len(ident) < 100 else None
    return RawEntry(
        title=_str(paper.get("title")) or _str(item.get("title")),
        abstract=_str(paper.get("summary")) or _str(item.get("summary")),
        authors=tuple(names),
        link=f"https://arxiv.org/abs/{found[0]}" if found else hf_link,
        hf_link=hf_link,
        id_hints=(ident,),
        published=n.parse_date(_str(paper.get("publishedAt")), now=now),
        upvotes=_int(paper.get("upvotes")),
        github_repo=_str(paper.get("githubRepo")),
        github_stars=_int(paper.get("githubStars")),
        tldr=_str(paper.get("ai_summary")) or _str(item.get("ai_summary")),
    )


def parse(
    body: bytes, *, source: str, content_type: str | None = None, now: datetime
) -> ParseResult:
    text = decode_document(body, content_type).text
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise SourceError(source, f"the Daily Papers listing is not valid JSON ({exc})") from exc
    if isinstance(data, dict) and isinstance(data.get("papers"), list):
        data = data["papers"]
    if not isinstance(data, list):
        raise SourceError(source, f"expected a JSON list of papers, found {type(data).__name__}")
    raws: list[RawEntry] = []
    malformed = 0
    for item in data:
        raw = _entry(item, now=now)
        if raw is None:
            malformed += 1
        else:
            raws.append(raw)
    problems = (
        [f"{malformed} list elements that are not paper objects skipped"] if malformed else []
    )
    if malformed and not raws:
        raise SourceError(source, "no element of the Daily Papers listing is a paper object")
    return build_result(raws, now=now, problems=problems, skipped=malformed)
