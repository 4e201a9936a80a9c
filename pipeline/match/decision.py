"""The matcher's decision record: why one paper is (or is not) in one reader's digest.

``decision(result, i, paper_id, ...)`` reads profile *i*'s row of a ``MatchResult``
with the functions that made it (``chunk_scores``, ``top_k``, ``pick_trending``,
``Reasons``, ``MatchResult.reason_lines``), so a ``Decision`` cannot disagree
with the digest: ``selected`` is membership in the result's arrays, the rank and
score come from the same ranking, the reason is the item's reason line. Nothing
here is computed for every reader; one record costs one row of scoring.
``pipeline.match.explain.format_decision`` turns a record into text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from pipeline.domain import MatchItem
from pipeline.match.ranking import RankPart
from pipeline.match.reasons import Reasons
from pipeline.match.scoring import boost_table, chunk_scores, pick_trending, rounded, top_k
from pipeline.match.tables import AUTHOR, CATEGORY, EXCLUDE, QUERY

if TYPE_CHECKING:
    from pipeline.match.embedding import EmbeddingBlend
    from pipeline.match.lsa import Lsa
    from pipeline.match.result import MatchResult

__all__ = [
    "Admission",
    "Decision",
    "Exclusion",
    "NotInPeriod",
    "RuleCheck",
    "Term",
    "WhyNot",
    "decision",
]

# What let the paper in: a rule hit, similarity at or above the threshold, a trending slot.
Admission = Literal["query", "authors", "categories", "similarity", "trending"]
# What keeps it out whatever its score: the profile's exclude query, an earlier digest.
Exclusion = Literal["exclude", "already_sent", "own_feedback"]
# Why a paper is not in the digest (first that applies, in this order).
WhyNot = Literal[
    "own_feedback",  # the reader liked or disliked it: never sent back
    "already_sent",  # in the reader's already-sent (or reserved) set
    "excluded",  # the exclude query matches it
    "not_admitted",  # no rule hit, and the profile has no similarity to admit with
    "below_threshold",  # no rule hit, and similarity < similarity_threshold
    "below_min_score",  # admitted, but score < min_score
    "cut",  # a candidate ranked below max_items (``rank`` says where)
]


_RULE_BITS: tuple[tuple[Admission, int], ...] = (
    ("query", QUERY),
    ("authors", AUTHOR),
    ("categories", CATEGORY),
)


class NotInPeriod(LookupError):
    """The paper is not among the papers the reader's profile was matched against."""


@dataclass(frozen=True, slots=True)
class RuleCheck:
    """One rule of the profile against the paper."""

    kind: Literal["query", "authors", "categories", "exclude"]
    rule: str  # the profile's value, as written ("" when the profile has none)
    hit: bool
    boost: float  # added to the score on a hit (0 for exclude)
    detail: str  # the reason part on a hit ("matched ti:x", "by A. B", "in cs.LG"), else ""


@dataclass(frozen=True, slots=True)
class Term:
    """One term of the similarity: ``weight × cosine`` (a dot product for the background)."""

    kind: Literal["background", "about", "liked", "disliked"]
    against: str  # "window mean", "about text", or the liked/disliked paper's id
    cosine: float  # the blended value used in the score
    weight: float
    embedding: float | None  # the embedding part of ``cosine``, with an embedding model

    @property
    def contribution(self) -> float:
        return self.cosine * self.weight


@dataclass(frozen=True, slots=True)
class Decision:
    """Everything the matcher decided about one (reader, paper) pair."""

    paper_id: str
    title: str
    # admission and exclusion
    admitted_by: tuple[Admission, ...]  # possibly several, in this order of kinds
    excluded_by: tuple[Exclusion, ...]
    rules: tuple[RuleCheck, ...]  # query, authors, categories, exclude (always all four)
    # the score and its terms: score = Σ boosts of hit rules + similarity + Σ ranking
    score: float  # rounded to 1e-6, as ranked (computed also when not eligible)
    similarity: float | None  # None: the profile has no text term (similarity counts 0)
    terms: tuple[Term, ...]  # sums to ``similarity`` (up to float32 rounding)
    ranking: tuple[RankPart, ...]  # ranking terms (eligible papers only; value × weight)
    blend: tuple[tuple[str, float], ...]  # each cosine = Σ weight × part, e.g. ("TF-IDF", 0.7)
    ignored: tuple[str, ...]  # liked/disliked ids without metadata (not counted)
    # what it was compared with
    similarity_threshold: float | None  # None: similarity cannot admit (no about, no liked)
    min_score: float
    # ranking among the reader's candidates (admitted, not excluded, not sent, ≥ min_score)
    rank: int | None  # 1-based; None when not a candidate
    candidates: int
    max_items: int
    # trending
    upvotes: int
    trending_slots: int  # the profile's ``trending``
    trending_rank: int | None  # 1-based among the papers open to its trending slots
    # the outcome
    selected: bool
    slot: Literal["interest", "trending"] | None
    why_not: WhyNot | None  # None when selected
    item: MatchItem | None  # the digest's item when selected
    reason: str  # the item's reason line (when not selected: what it would have said)

    @property
    def boost(self) -> float:
        return sum(r.boost for r in self.rules if r.hit)

    @property
    def rank_bonus(self) -> float:
        return sum(p.contribution for p in self.ranking)


def decision(result: MatchResult, i: int, paper_id: str, *, lsa: Lsa | None = None) -> Decision:
    """The decision record of profile ``i`` of ``result`` about ``paper_id``.

    ``lsa`` is the matcher's (it only names the cosine blend). Raises
    ``NotInPeriod`` when the paper was not among the matched papers,
    ``IndexError`` for a profile out of range.
    """
    if not 0 <= i < len(result):
        raise IndexError(f"profile {i} out of range: the result has {len(result)} profiles")
    period = result.period
    col = period.position.get(paper_id)
    if col is None:
        raise NotInPeriod(
            f"paper {paper_id} is not among the {period.n} papers matched for this reader"
        )
    c, reasons, settings = result.compiled, result.reasons, result.settings
    assert c is not None and reasons is not None  # a non-empty result has both
    n = period.n
    rows = np.array([i], dtype=np.int64)

    # The row as ``select`` scored it: codes, similarities, eligible scores, sent pairs −inf.
    scored = chunk_scores(c, rows, settings)
    sent = c.sent_cols[c.sent_rows == i]
    own = bool((c.own_cols[c.own_rows == i] == col).any())
    scored.score[0, sent] = -np.inf
    undiversified = scored.score.copy()
    c.diversity.apply(scored.score)
    code = int(scored.code[0, col])
    sim = None if scored.sims is None else scored.sims[0, col]
    hits = code & ~EXCLUDE

    # Every candidate ranked by the same top-k (a full ranking: its prefix is the top k).
    _, ranked, ranked_scores = top_k(scored.score, np.array([n], dtype=np.int64))
    at = np.flatnonzero(ranked == col)
    rank = int(at[0]) + 1 if at.size else None

    # What the result selected (its arrays), and the order trending slots were filled in.
    s, t = int(result.start[i]), int(result.trending_start[i])
    interest = result.papers[s : s + int(result.count[i])]
    picked = np.flatnonzero(interest == col)
    if picked.size:  # the digest's own number
        score = float(result.scores[s + int(picked[0])])
    elif at.size:
        score = float(ranked_scores[at[0]])
    else:  # not eligible: the same sum, before the −inf that keeps it out
        boost = boost_table(settings, unmatched=0.0)[hits]
        total = boost + (np.float32(0.0) if sim is None else sim)
        score = float(rounded(total))  # below min_score: no ranking terms were added
    trending = result.trending_papers[t : t + int(result.trending_count[i])]
    slots = int(c.trending[i])
    trending_rank = None
    if slots:
        taken = np.concatenate([interest, sent])
        _, open_cols, _ = pick_trending(
            scored.code,
            np.array([period.trending_cols.size], dtype=np.int64),
            period.trending_cols,
            period.upvotes,
            np.zeros(taken.size, dtype=np.int64),
            taken,
        )
        where = np.flatnonzero(open_cols == col)
        trending_rank = int(where[0]) + 1 if where.size else None
    in_interest = bool(picked.size)
    in_trending = bool((trending == col).any())
    upvotes = int(period.upvotes[col])

    has_sim = bool(c.has_sim[i])
    threshold = np.float32(settings.similarity_threshold)
    admitted: list[Admission] = [kind for kind, bit in _RULE_BITS if hits & bit]
    if has_sim and sim is not None and sim >= threshold:
        admitted.append("similarity")
    if in_trending:
        admitted.append("trending")
    excluded: list[Exclusion] = []
    if code & EXCLUDE:
        excluded.append("exclude")
    already_sent = bool((sent == col).any()) and not own
    if already_sent:
        excluded.append("already_sent")
    if own:
        excluded.append("own_feedback")

    why: WhyNot | None = None
    if not (in_interest or in_trending):
        if own:
            why = "own_feedback"
        elif already_sent:
            why = "already_sent"
        elif code & EXCLUDE:
            why = "excluded"
        elif rank is not None:
            why = "cut"
        elif not hits and not has_sim:
            why = "not_admitted"
        elif not hits and (sim is None or sim < threshold):
            why = "below_threshold"
        else:
            why = "below_min_score"

    owner, cols = np.array([i], dtype=np.int64), np.array([col], dtype=np.int64)
    interest_reason = result.reason_lines(owner, cols)[0]
    item = None
    if in_interest:
        item = MatchItem(paper_id, score, interest_reason)
    elif in_trending:
        item = MatchItem(paper_id, float(upvotes), Reasons.trending(upvotes), True)

    rules = c.rules
    q, a, k, e = (int(x[i]) for x in (c.query, c.authors, c.categories, c.exclude))
    return Decision(
        paper_id=paper_id,
        title=period.papers[col].title,
        admitted_by=tuple(admitted),
        excluded_by=tuple(excluded),
        rules=(
            RuleCheck(
                "query",
                rules.queries[q],
                bool(hits & QUERY),
                settings.query_boost,
                reasons.query(q, col) if hits & QUERY else "",
            ),
            RuleCheck(
                "authors",
                ", ".join(rules.author_lists[a]),
                bool(hits & AUTHOR),
                settings.author_boost,
                reasons.authors(a, col) if hits & AUTHOR else "",
            ),
            RuleCheck(
                "categories",
                ", ".join(rules.category_lists[k]),
                bool(hits & CATEGORY),
                settings.category_boost,
                reasons.categories(k, col) if hits & CATEGORY else "",
            ),
            RuleCheck("exclude", rules.excludes[e], bool(code & EXCLUDE), 0.0, ""),
        ),
        score=score,
        similarity=None if sim is None else float(sim),
        ranking=(
            c.ranking.parts(
                q, a, k, col, (bool(hits & QUERY), bool(hits & AUTHOR), bool(hits & CATEGORY))
            )
            + c.feedback.parts(int(c.like_id[i]), int(c.dislike_id[i]), col)
            + c.diversity.parts(undiversified, col)
            if rank is not None or in_interest  # the terms its ranked score includes
            else ()
        ),
        terms=_terms(result, i, col) if sim is not None else (),
        blend=_blend(settings.lsa_weight, lsa, period.embedding),
        ignored=tuple(
            dict.fromkeys(
                pid
                for pid in (*c.like_lists[c.like_id[i]], *c.dislike_lists[c.dislike_id[i]])
                if pid in c.texts.missing
            )
        ),
        similarity_threshold=settings.similarity_threshold if has_sim else None,
        min_score=float(str(c.min_score[i])),  # the profile's value (held as float32)
        rank=rank,
        candidates=int(ranked.size),
        max_items=int(c.max_items[i]),
        upvotes=upvotes,
        trending_slots=slots,
        trending_rank=trending_rank,
        selected=in_interest or in_trending,
        slot="interest" if in_interest else "trending" if in_trending else None,
        why_not=why,
        item=item,
        reason=item.reason if item is not None else interest_reason,
    )


def _terms(result: MatchResult, i: int, col: int) -> tuple[Term, ...]:
    """Profile ``i``'s row of the weight matrix, term by term, against paper ``col``."""
    c = result.compiled
    assert c is not None
    texts = c.texts
    weights = c.weights.getrow(i)
    liked = {texts.row[p] for p in c.like_lists[c.like_id[i]] if p in texts.row}
    disliked = {texts.row[p] for p in c.dislike_lists[c.dislike_id[i]] if p in texts.row}
    semantic = _embedding_parts(result, weights.indices.tolist(), col)
    out: list[Term] = []
    for row, weight in zip(weights.indices.tolist(), weights.data.tolist(), strict=True):
        cosine = float(texts.rows[row, col])
        part = semantic.get(row)
        if row == 0:
            out.append(Term("background", "window mean", cosine, weight, part))
        elif row >= texts.about_base:
            out.append(Term("about", "about text", cosine, weight, part))
        else:
            # a paper both liked and disliked has one net weight: named by its sign
            like = row in liked and (row not in disliked or weight > 0)
            kind: Literal["liked", "disliked"] = "liked" if like else "disliked"
            out.append(Term(kind, texts.ids[row], cosine, weight, part))
    return tuple(out)


def _embedding_parts(result: MatchResult, rows: list[int], col: int) -> dict[int, float]:
    """Text row → its embedding cosine against paper ``col``, as ``TextTables`` blended it
    (the same ``EmbeddingBlend.cosines``; vectors come from the embedder's cache)."""
    c = result.compiled
    embedding = result.period.embedding
    if embedding is None or not embedding.weight or c is None or not rows:
        return {}
    texts = c.texts
    paper = result.period.embedded[col : col + 1]
    out = {0: float(paper[0] @ embedding.background)} if 0 in rows else {}
    refs = [r for r in rows if 0 < r < texts.about_base]
    abouts = [r for r in rows if r >= texts.about_base]
    values = embedding.cosines(
        [texts.sources[r - 1] for r in refs],
        [texts.abouts[r - texts.about_base] for r in abouts],
        paper,
    )
    out.update(zip([*refs, *abouts], values[:, 0].tolist(), strict=True))
    return out


def _blend(
    lsa_weight: float, lsa: Lsa | None, embedding: EmbeddingBlend | None
) -> tuple[tuple[str, float], ...]:
    """How each cosine is blended, as ``TextTables`` does it: (part, weight) pairs."""
    e = embedding.weight if embedding is not None else 0.0
    parts: list[tuple[str, float]] = []
    if lsa is not None and lsa_weight:
        parts.append(("TF-IDF", (1 - lsa_weight) * (1 - e)))
        parts.append((f"LSA ({lsa.dimensions} dimensions)", lsa_weight * (1 - e)))
    else:
        parts.append(("TF-IDF", 1 - e))
    if embedding is not None and e:
        parts.append((f"embedding ({embedding.embedder.name})", e))
    return tuple(parts)
