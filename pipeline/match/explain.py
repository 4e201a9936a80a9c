"""``paperpost explain EMAIL PAPER``: the full score breakdown of one (profile, paper) pair.

It runs the same functions as ``Matcher.match`` (``similarity``, ``combine``,
``admitted``) on a period made of that one paper, so every number printed is
the number the ranking used.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from pipeline.domain import Paper, Profile
from pipeline.match.period import Components, Period, RuleTables
from pipeline.match.reasons import Reasons
from pipeline.match.scoring import admitted, combine, compile_chunk, similarity

if TYPE_CHECKING:
    from pipeline.match.engine import Matcher

__all__ = ["explain"]


def explain(matcher: Matcher, profile: Profile, paper: Paper, liked: Mapping[str, Paper]) -> str:
    settings = matcher.settings
    period = Period([paper], matcher.model, matcher.background)
    components = Components(
        [*profile.like, *profile.dislike],
        period,
        matcher.model,
        matcher.window,
        matcher.window_vectors,
        liked,
        matcher.background,
    )
    tables = RuleTables(period)
    reasons = Reasons(period, components, settings.reason_terms)
    chunk = compile_chunk([profile], None, tables, components, period, settings)
    sims, about = similarity(chunk, period, components, matcher.model)
    table = tables.table
    q, a, c = (table[chunk.query], table[chunk.authors], table[chunk.categories])
    excluded = bool(table[chunk.exclude][0, 0])
    score = float(np.round(float(combine(sims, q, a, c, settings)[0, 0]), 6))
    ok = bool(admitted(sims, q, a, c, chunk.has_sim, settings)[0, 0])
    hit_q, hit_a, hit_c = bool(q[0, 0]), bool(a[0, 0]), bool(c[0, 0])

    lines = [f"paper {paper.id}: {paper.title}", f"score {score:.6f}"]
    parts: list[str] = []

    def rule(name: str, value: str | None, hit: bool, boost: float, why: str) -> None:
        if not value:
            lines.append(f"  {name:<11} (none)")
            return
        if hit:
            parts.append(why)
            lines.append(f"  {name:<11} {value}  → hit (+{boost:.2f}): {why}")
        else:
            lines.append(f"  {name:<11} {value}  → no hit")

    rule(
        "query",
        profile.query,
        hit_q,
        settings.query_boost,
        reasons.query(profile.query or "", 0) if hit_q else "",
    )
    rule(
        "authors",
        ", ".join(profile.authors),
        hit_a,
        settings.author_boost,
        reasons.authors(profile.authors, 0) if hit_a else "",
    )
    rule(
        "categories",
        ", ".join(profile.categories),
        hit_c,
        settings.category_boost,
        reasons.categories(profile.categories, 0) if hit_c else "",
    )
    if profile.exclude:
        verdict = "→ HIT: the paper is removed" if excluded else "→ no hit"
        lines.append(f"  {'exclude':<11} {profile.exclude}  {verdict}")

    sim = float(sims[0, 0])
    lines.append(
        f"  {'similarity':<11} {sim:.4f}"
        + ("" if chunk.has_sim[0] else " (no about, no known liked paper)")
    )
    weights = chunk.weights.getrow(0)
    about_best: tuple[float, str] | None = None
    like_best: tuple[float, str] | None = None
    if chunk.about_row[0] >= 0:
        cosine = float(about[chunk.about_row[0], 0])
        lines.append(f"      about text      cosine {cosine:.4f} × {chunk.about_coef[0]:.4f}")
        about_best = (cosine, reasons.about(cosine))
    for row, weight in zip(weights.indices.tolist(), weights.data.tolist(), strict=True):
        cosine = float(components.sims[row, 0])
        if row == 0:
            lines.append(f"      background      dot    {cosine:.4f} × {weight:.4f} (window mean)")
            continue
        pid = components.ids[row]
        kind = "liked" if weight > 0 else "disliked"
        lines.append(f"      {kind:<8} {pid:<10} cosine {cosine:.4f} × {weight:.4f}")
        if weight > 0 and (like_best is None or cosine > like_best[0]):
            like_best = (cosine, reasons.liked(row, cosine))
    unknown = sorted(components.missing)
    if unknown:
        lines.append(f"      ignored (no metadata found): {', '.join(unknown)}")
    if like_best is not None and (about_best is None or like_best[0] >= about_best[0]):
        parts.append(like_best[1])
    elif about_best is not None:
        parts.append(about_best[1])

    if not ok:
        admission = (
            f"no: no rule hit and similarity {sim:.4f} < threshold "
            f"{settings.similarity_threshold:.2f}"
        )
    elif hit_q or hit_a or hit_c:
        admission = "yes: rule hit"
    else:
        admission = f"yes: similarity {sim:.4f} ≥ threshold {settings.similarity_threshold:.2f}"
    lines.append(f"  {'admitted':<11} {admission}")
    passes = "passes" if score >= profile.min_score else "FAILS: the paper is dropped"
    lines.append(f"  {'min_score':<11} {profile.min_score:.2f} → {passes}")
    eligible = ok and not excluded and score >= profile.min_score
    lines.append(
        f"  {'verdict':<11} "
        + (
            f"eligible; selected when among the top {profile.max_items} of the period "
            "and not already sent"
            if eligible
            else "not selected"
        )
    )
    if eligible:
        lines.append(f"  {'reason':<11} {'; '.join(parts)}")
    return "\n".join(lines)
