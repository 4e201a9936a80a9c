"""``paperpost explain EMAIL PAPER``: the full score breakdown of one (profile, paper) pair.

It runs the same functions as ``Matcher.match_compact`` (``compile_profiles``,
``chunk_scores``) on a period made of that one paper, so every number printed
is the number the ranking used.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from pipeline.domain import Paper, Profile
from pipeline.match.compile import compile_profiles
from pipeline.match.period import Period
from pipeline.match.reasons import Reasons
from pipeline.match.scoring import boost_table, chunk_scores, rounded
from pipeline.match.tables import AUTHOR, CATEGORY, EXCLUDE, QUERY

if TYPE_CHECKING:
    from pipeline.match.engine import Matcher

__all__ = ["explain"]


def explain(matcher: Matcher, profile: Profile, paper: Paper, liked: Mapping[str, Paper]) -> str:
    settings = matcher.settings
    period = Period([paper], matcher.model, matcher.background, matcher.embedding)
    compiled = compile_profiles(
        [profile],
        None,
        period,
        matcher.model,
        matcher.window,
        matcher.window_vectors,
        liked,
        settings,
        matcher.lsa,
    )
    texts = compiled.texts
    reasons = Reasons(period, compiled.rules, texts, settings.reason_terms)
    scored = chunk_scores(compiled, np.zeros(1, dtype=np.int64), settings)
    code = int(scored.code[0, 0])
    sims = np.zeros((1, 1), np.float32) if scored.sims is None else scored.sims
    hit_q, hit_a, hit_c = bool(code & QUERY), bool(code & AUTHOR), bool(code & CATEGORY)
    excluded = bool(code & EXCLUDE)
    ok = bool(np.isfinite(scored.score[0, 0]))
    # the value before eligibility (an ineligible paper's is -inf in the ranking)
    raw = boost_table(settings, unmatched=0.0)[code & ~EXCLUDE] + sims[0, 0]
    score = float(rounded(raw))
    has_sim = bool(compiled.has_sim[0])
    admitted = (
        hit_q
        or hit_a
        or hit_c
        or (has_sim and float(sims[0, 0]) >= np.float32(settings.similarity_threshold))
    )
    qrow, arow, crow = int(compiled.query[0]), int(compiled.authors[0]), int(compiled.categories[0])

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
        reasons.query(qrow, 0) if hit_q else "",
    )
    rule(
        "authors",
        ", ".join(profile.authors),
        hit_a,
        settings.author_boost,
        reasons.authors(arow, 0) if hit_a else "",
    )
    rule(
        "categories",
        ", ".join(profile.categories),
        hit_c,
        settings.category_boost,
        reasons.categories(crow, 0) if hit_c else "",
    )
    if profile.exclude:
        verdict = "→ HIT: the paper is removed" if excluded else "→ no hit"
        lines.append(f"  {'exclude':<11} {profile.exclude}  {verdict}")

    sim = float(sims[0, 0])
    lines.append(
        f"  {'similarity':<11} {sim:.4f}" + ("" if has_sim else " (no about, no known liked paper)")
    )
    blend = matcher.embedding
    if blend is not None and has_sim:
        lines.append(f"      (each cosine = {_blend_formula(matcher)})")
    elif matcher.lsa is not None and settings.lsa_weight and has_sim:
        w = settings.lsa_weight
        lines.append(
            f"      (each cosine = {1 - w:.2f} × TF-IDF + {w:.2f} × LSA, "
            f"{matcher.lsa.dimensions} dimensions)"
        )
    semantic = _embedding_cosines(matcher, period, texts.ids, profile, liked)
    weights = compiled.weights.getrow(0)
    about_best: tuple[float, str] | None = None
    like_best: tuple[float, str] | None = None
    for row, weight in zip(weights.indices.tolist(), weights.data.tolist(), strict=True):
        cosine = float(texts.rows[row, 0])
        if row >= texts.about_base:
            lines.append(f"      about text      cosine {cosine:.4f} × {weight:.4f}{semantic(row)}")
            about_best = (cosine, reasons.about(cosine))
            continue
        if row == 0:
            lines.append(
                f"      background      dot    {cosine:.4f} × {weight:.4f} (window mean)"
                + semantic(row)
            )
            continue
        pid = texts.ids[row]
        kind = "liked" if weight > 0 else "disliked"
        lines.append(f"      {kind:<8} {pid:<10} cosine {cosine:.4f} × {weight:.4f}{semantic(row)}")
        if weight > 0 and (like_best is None or cosine > like_best[0]):
            like_best = (cosine, reasons.liked(row, cosine))
    unknown = sorted(texts.missing)
    if unknown:
        lines.append(f"      ignored (no metadata found): {', '.join(unknown)}")
    if like_best is not None and (about_best is None or like_best[0] >= about_best[0]):
        parts.append(like_best[1])
    elif about_best is not None:
        parts.append(about_best[1])

    if not admitted:
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
    eligible = ok
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


def _blend_formula(matcher: Matcher) -> str:
    """``0.35 × TF-IDF + 0.15 × LSA (128 dimensions) + 0.50 × embedding (model)``."""
    settings = matcher.settings
    blend = matcher.embedding
    e = blend.weight if blend is not None else 0.0
    terms: list[str] = []
    if matcher.lsa is not None and settings.lsa_weight:
        w = settings.lsa_weight
        terms.append(f"{(1 - w) * (1 - e):.2f} × TF-IDF")
        terms.append(f"{w * (1 - e):.2f} × LSA ({matcher.lsa.dimensions} dimensions)")
    else:
        terms.append(f"{1 - e:.2f} × TF-IDF")
    if blend is not None:
        terms.append(f"{e:.2f} × embedding ({blend.embedder.name})")
    return " + ".join(terms)


def _embedding_cosines(
    matcher: Matcher,
    period: Period,
    ids: Sequence[str],
    profile: Profile,
    liked: Mapping[str, Paper],
) -> Callable[[int], str]:
    """Text row → "  (embedding 0.6123)", the embedding part of that row's cosine
    (vectors come from the embedder's cache: the tables just encoded them)."""
    blend = matcher.embedding
    if blend is None:
        return lambda row: ""
    paper = period.papers[0]
    embedded = period.embedded[0]

    def source(pid: str) -> Paper:
        # the same order as TextTables: the liked mapping, the window, the period
        if pid in liked:
            return liked[pid]
        if pid in matcher.window:
            return blend.window[matcher.window[pid]]
        return paper

    def show(row: int) -> str:
        if row == 0:
            vector = blend.background
        elif row < len(ids):
            vector = blend.embedder.papers([source(ids[row])])[0]
        else:
            vector = blend.embedder.texts([profile.about or ""])[0]
        return f"  (embedding {float(vector @ embedded):.4f})"

    return show
