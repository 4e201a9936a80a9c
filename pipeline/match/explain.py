"""``paperpost explain EMAIL PAPER``: a ``Decision`` as text.

Formatting only: every number and verdict comes from the record the matcher
made (``pipeline.match.decision``); nothing here scores, admits or ranks.
"""

from __future__ import annotations

from pipeline.match.decision import Decision, RuleCheck, Term
from pipeline.match.ranking import RankPart

__all__ = ["format_decision"]

_WHY = {
    "own_feedback": "the reader liked or disliked it (a paper is never sent back to its reader)",
    "already_sent": "already sent to this reader (or reserved for a planned digest)",
    "excluded": "the exclude query matches it",
    "not_admitted": "not admitted: no rule hit, and no about text or known liked paper",
}


def format_decision(d: Decision) -> str:
    """The multi-line breakdown ``paperpost explain`` prints."""
    score = f"score {d.score:.6f}"
    if d.slot == "trending":
        score += f"  (as a trending item its score is its {d.upvotes} upvotes)"
    # A content hash or link id means nothing to a reader: the title first, the id after.
    hashed = d.paper_id.startswith(("sha:", "url:"))
    named = f"“{d.title}” (id {d.paper_id})" if hashed else f"{d.paper_id}: {d.title}"
    lines = [f"paper {named}", score]
    lines += [_rule(r) for r in d.rules if r.kind != "exclude" or r.rule]
    lines += _similarity(d)
    lines += _ranking(d)
    lines.append(f"  {'admitted':<11} {_admitted(d)}")
    if d.why_not == "below_min_score":
        verdict = f"FAILS: the paper is dropped ({d.score:.6f} < {d.min_score:.2f})"
    elif d.rank is not None:
        verdict = f"passes ({d.score - d.rank_bonus:.6f} before ranking terms)"
    else:
        verdict = "not reached"
    lines.append(f"  {'min_score':<11} {d.min_score:.2f} → {verdict}")
    if d.rank is not None:
        lines.append(
            f"  {'rank':<11} {d.rank} of {d.candidates} candidate(s), max_items {d.max_items}"
        )
    else:
        lines.append(f"  {'rank':<11} not a candidate ({d.candidates} candidate(s))")
    if d.trending_slots:
        lines.append(f"  {'trending':<11} {_trending(d)}")
    lines.append(f"  {'verdict':<11} {_verdict(d)}")
    if d.selected:
        lines.append(f"  {'reason':<11} {d.reason}")
    elif d.admitted_by and d.reason:
        lines.append(f"  {'reason':<11} (would be) {d.reason}")
    return "\n".join(lines)


def _rule(r: RuleCheck) -> str:
    name = f"  {r.kind:<11}"
    if not r.rule:
        return f"{name} (none)"
    if r.kind == "exclude":
        return f"{name} {r.rule}  " + ("→ HIT: the paper is removed" if r.hit else "→ no hit")
    if r.hit:
        return f"{name} {r.rule}  → hit (+{r.boost:.2f}): {r.detail}"
    return f"{name} {r.rule}  → no hit"


def _similarity(d: Decision) -> list[str]:
    if d.similarity is None:
        return [f"  {'similarity':<11} none (no about, no known liked or disliked paper)"]
    note = "" if d.similarity_threshold is not None else " (no about, no known liked paper)"
    lines = [f"  {'similarity':<11} {d.similarity:.4f}{note}"]
    if d.terms:
        blend = " + ".join(f"{w:.2f} × {part}" for part, w in d.blend)
        lines.append(f"      (each cosine = {blend})")
    lines += [_term(t) for t in d.terms]
    if d.ignored:
        lines.append(f"      ignored (no metadata found): {', '.join(d.ignored)}")
    return lines


def _ranking(d: Decision) -> list[str]:
    if not d.ranking:
        why = "none apply" if d.rank is not None else "none (added to eligible papers only)"
        return [f"  {'ranking':<11} {why}"]
    lines = [f"  {'ranking':<11} {d.rank_bonus:+.4f}"]
    lines += [_rank_part(p) for p in d.ranking]
    return lines


def _rank_part(p: RankPart) -> str:
    name = f"{p.kind} ({p.rule})" if p.rule else p.kind
    return f"      {name:<22} {p.value:.4f} × {p.weight:.2f}  {p.detail}"


def _term(t: Term) -> str:
    value = f"{t.cosine:.4f} × {t.weight:.4f}"
    semantic = "" if t.embedding is None else f"  (embedding {t.embedding:.4f})"
    if t.kind == "background":
        return f"      background      dot    {value} (window mean){semantic}"
    if t.kind == "about":
        return f"      about text      cosine {value}{semantic}"
    return f"      {t.kind:<8} {t.against:<10} cosine {value}{semantic}"


def _admitted(d: Decision) -> str:
    threshold = d.similarity_threshold
    sim = d.similarity
    parts: list[str] = []
    for kind in d.admitted_by:
        if kind == "similarity":
            assert sim is not None and threshold is not None
            parts.append(f"similarity {sim:.4f} ≥ threshold {threshold:.2f}")
        elif kind == "trending":
            parts.append("a trending slot")
        else:
            parts.append(f"{kind} hit")
    if parts:
        return "yes: " + ", ".join(parts)
    if threshold is None or sim is None:
        return "no: no rule hit, and no about text or known liked paper"
    return f"no: no rule hit and similarity {sim:.4f} < threshold {threshold:.2f}"


def _trending(d: Decision) -> str:
    head = f"{d.trending_slots} slot(s); "
    if not d.upvotes:
        return head + "the paper has no upvotes"
    if d.trending_rank is None:
        why = "already an interest item" if d.slot == "interest" else "excluded or already sent"
        return head + f"{d.upvotes} upvotes, {why}"
    picked = "picked" if d.trending_rank <= d.trending_slots else "not picked"
    return head + f"{d.upvotes} upvotes, #{d.trending_rank} of the papers open to them → {picked}"


def _verdict(d: Decision) -> str:
    if d.slot == "interest":
        return f"selected: interest item {d.rank} (max_items {d.max_items})"
    if d.slot == "trending":
        return f"selected: trending item {d.trending_rank} of {d.trending_slots}"
    why = d.why_not
    if why == "cut":
        return f"not selected: cut by max_items {d.max_items} at rank {d.rank}"
    if why == "below_threshold":
        return f"not selected: below the similarity threshold {d.similarity_threshold:.2f}"
    if why == "below_min_score":
        return f"not selected: score {d.score:.6f} below min_score {d.min_score:.2f}"
    assert why is not None
    return f"not selected: {_WHY[why]}"
