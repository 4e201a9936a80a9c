"""Scoring a chunk of compiled profiles against every paper of the period, as matrices.

For a chunk of profiles (rows) × papers (columns)::

    code  = query[q] | authors[a] | categories[c] | exclude[e]   uint8: which rules hit
    sims  = W · TextTables.rows                                   one sparse × dense product
    score = boosts(code) + sims
    eligible: code names a rule hit (and no exclude), or sims ≥ threshold with similarity,
              and score ≥ min_score, and not already sent
    score += ranking terms (pipeline.match.ranking, and the reader's learned term from
             pipeline.match.feedback) on eligible papers only
    top-k per row: each row's k-th value, then exact ties on the score rounded to 1e-6 resolved
                   by the period's order (new, cross, replace; then id).

``boosts`` is a 16-entry table indexed by ``code``, so the rules cost one gather.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from pipeline.match.compile import Compiled
from pipeline.match.settings import MatchSettings
from pipeline.match.tables import AUTHOR, CATEGORY, EXCLUDE, QUERY

__all__ = ["ChunkScores", "boost_table", "chunk_scores", "pick_trending", "rounded", "top_k"]

I64 = npt.NDArray[np.int64]
F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
U8 = npt.NDArray[np.uint8]
Bools = npt.NDArray[np.bool_]
_NEG = np.float32(-np.inf)
_LOWEST = np.finfo(np.float32).min


def boost_table(settings: MatchSettings, *, unmatched: float) -> F32:
    """Score added by each rule code; ``unmatched`` for code 0, −inf when excluded."""
    table = np.empty(16, dtype=np.float32)
    for code in range(16):
        value = np.float32(0.0)
        if code & QUERY:
            value += np.float32(settings.query_boost)
        if code & AUTHOR:
            value += np.float32(settings.author_boost)
        if code & CATEGORY:
            value += np.float32(settings.category_boost)
        table[code] = value
    table[0] = unmatched
    table[EXCLUDE:] = _NEG
    return table


def rounded(score: F32 | F64) -> F64:
    """The score as reported and ranked: float64, rounded to 1e-6."""
    return np.rint(np.asarray(score, dtype=np.float64) * 1e6) / 1e6


@dataclass(frozen=True, slots=True)
class ChunkScores:
    code: U8  # rows × papers
    sims: F32 | None  # rows × papers, None when no row of the chunk has a similarity vector
    score: F32  # rows × papers, −inf where not eligible (already-sent pairs not yet removed)
    bonus: F32 | None  # rows × papers: the ranking terms (pipeline.match.ranking), or None


def chunk_scores(compiled: Compiled, rows: I64, settings: MatchSettings) -> ChunkScores:
    c = compiled
    r = c.rules
    code = r.rows(r.query, c.query[rows], QUERY)
    code |= r.rows(r.authors, c.authors[rows], AUTHOR)
    code |= r.rows(r.categories, c.categories[rows], CATEGORY)
    code |= r.rows(r.exclude, c.exclude[rows], EXCLUDE)
    min_score = c.min_score[rows]
    bonus = c.ranking.bonus(c.query[rows], c.authors[rows], c.categories[rows])
    learned = c.feedback.bonus(c.like_id[rows], c.dislike_id[rows])
    if learned is not None:
        bonus = learned if bonus is None else bonus + learned
    if c.product[rows].any():
        sims = np.asarray(c.weights[rows] @ c.texts.rows, dtype=np.float32)
        score = np.take(boost_table(settings, unmatched=0.0), code)
        score += sims
        # Admission: a rule hit, or (no rule hit) similarity ≥ threshold for a profile
        # with similarity; excluded codes are −inf through the table.
        floor_unmatched = np.full(rows.size, np.float32(settings.similarity_threshold))
        floor_unmatched[~c.has_sim[rows]] = np.inf
        np.copyto(score, _NEG, where=(code == 0) & (sims < floor_unmatched[:, None]))
        _finish(score, bonus, min_score, -np.inf)
        return ChunkScores(code, sims, score, bonus)
    table = boost_table(settings, unmatched=-np.inf)
    score = np.take(table, code)
    _finish(score, bonus, min_score, float(table[np.isfinite(table)].min(initial=np.inf)))
    return ChunkScores(code, None, score, bonus)


def _finish(score: F32, bonus: F32 | None, min_score: F32, lowest: float) -> None:
    """Drop what falls below ``min_score`` (boosts + similarity: the admission score),
    then add the ranking terms to what is left. Ranking terms order, never admit: a
    "less like this" look-alike pushed below ``min_score`` stays out. ``lowest``: no
    admitted score is below it, so a chunk whose ``min_score`` are all at or below it
    skips the comparison."""
    if (min_score > lowest).any():
        np.copyto(score, _NEG, where=score < min_score[:, None])
    if bonus is not None:
        np.add(score, bonus, out=score, where=score > _NEG)


def top_k(score: F32, k: I64) -> tuple[I64, I64, F64]:
    """The best ``k[r]`` eligible papers of each row: (row, paper, rounded score), ranked.

    Ranking is by the score rounded to 1e-6, then by paper index (the period's
    order). ``np.partition`` finds each row's k-th value; every paper that could
    round to it is a candidate, and ties are settled exactly on the candidates.
    """
    rows, n = score.shape
    k = np.minimum(k, n)
    if rows == 0 or n == 0 or k.max(initial=0) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0, dtype=np.float64)
    kth = np.full(rows, -np.inf, dtype=np.float32)  # rows that take every eligible paper
    eligible = np.count_nonzero(score > _NEG, axis=1)
    partial = (k > 0) & (k < eligible)
    if partial.any():
        # numpy's vectorised sort of short float32 rows beats np.partition here
        ordered = np.sort(score[partial], axis=1)
        kth[partial] = ordered[np.arange(ordered.shape[0]), n - k[partial]]
    kth[k == 0] = np.inf
    floor64 = kth.astype(np.float64) - 2e-6
    floor = floor64.astype(np.float32)
    floor = np.where(floor > floor64, np.nextafter(floor, _NEG), floor)
    floor = np.maximum(floor, _LOWEST)  # −inf (not eligible) never passes
    flat = np.flatnonzero(score >= floor[:, None])
    cand_r, cand_c = np.divmod(flat, n)
    q = np.rint(score.ravel()[flat].astype(np.float64) * 1e6)
    qk = np.rint(kth.astype(np.float64) * 1e6)[cand_r]
    above = q > qk
    tied = q == qk
    need = k - np.bincount(cand_r[above], minlength=rows)
    tied_before = np.concatenate([[0], np.cumsum(tied)])
    row_start = np.concatenate([[0], np.cumsum(np.bincount(cand_r, minlength=rows))])[:-1]
    rank = tied_before[1:] - tied_before[row_start[cand_r]]
    keep = above | (tied & (rank <= need[cand_r]))
    kr, kc, kq = cand_r[keep], cand_c[keep], q[keep]
    # Rank within each row by score, descending; kept pairs are already in (row, paper)
    # order, so a stable sort on (row, −score) leaves equal scores in paper order.
    low, high = (kq.min(), kq.max()) if kq.size else (0.0, 0.0)
    span = high - low + 1
    if span * rows < 2.0**62:
        key = kr * np.int64(span) + (high - kq).astype(np.int64)
        order = np.argsort(key, kind="stable")
    else:
        order = np.lexsort((kc, -kq, kr))
    return kr[order], kc[order], kq[order] / 1e6


def pick_trending(
    code: U8,
    trending: I64,
    columns: I64,
    upvotes: F64,
    taken_rows: I64,
    taken_cols: I64,
) -> tuple[I64, I64, F64]:
    """Up to ``trending[r]`` papers of ``columns`` (most upvoted first) per row.

    Skips papers the row's exclude matches and the (row, paper) pairs in
    ``taken_*`` (already selected or already sent).
    """
    who = np.flatnonzero(trending > 0)
    if who.size == 0 or columns.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0, dtype=np.float64)
    allowed = (code[np.ix_(who, columns)] & np.uint8(EXCLUDE)) == 0
    slot = np.full(code.shape[1], -1, dtype=np.int64)
    slot[columns] = np.arange(columns.size)
    line = np.full(code.shape[0], -1, dtype=np.int64)
    line[who] = np.arange(who.size)
    hit = (line[taken_rows] >= 0) & (slot[taken_cols] >= 0)
    allowed[line[taken_rows[hit]], slot[taken_cols[hit]]] = False
    allowed &= np.cumsum(allowed, axis=1) <= trending[who][:, None]
    tr, tc = np.nonzero(allowed)
    cols = columns[tc]
    return who[tr], cols, upvotes[cols]
