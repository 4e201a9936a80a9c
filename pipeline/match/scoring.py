"""Scoring one chunk of profiles against all papers of the period, as matrices.

``compile_chunk`` turns profiles into small integers and sparse weights (Python,
one pass, memoised lookups); ``score_chunk`` does the rest with numpy/scipy:

    S     = W · C                      similarity (profiles × papers), C = component cosines
    score = S + boosts · rule hits
    ok    = (rule hit | S ≥ threshold) & ¬exclude & ¬already sent & score ≥ min_score
    top-k per row on an integer key (score to 1e-6, then the period's tie-break).
"""

from __future__ import annotations

from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from pipeline.domain import Profile
from pipeline.match.period import Components, Period, RuleTables
from pipeline.match.settings import MatchSettings
from pipeline.match.similarity import TfidfModel
from pipeline.match.text import words

__all__ = ["Chunk", "Scored", "admitted", "combine", "compile_chunk", "score_chunk", "similarity"]

I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]
F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
Bools = npt.NDArray[np.bool_]
_NONE = np.iinfo(np.int64).min + 1  # negates without overflow
_MAX_PADDED_LIKES = 64


@dataclass(frozen=True, slots=True)
class Chunk:
    """Profiles of one chunk, compiled."""

    query: I32
    exclude: I32
    categories: I32
    authors: I32
    about_row: I32  # index into about_texts, -1 for none
    about_coef: F32
    about_texts: list[str]
    weights: sp.csr_matrix  # profiles × component rows (without the padding row)
    has_sim: Bools
    like_rows: list[list[int]]  # component rows of each profile's liked papers
    max_items: I64
    min_score: F32
    sent_rows: I64
    sent_cols: I64


def compile_chunk(
    profiles: Sequence[Profile],
    exclude_ids: Sequence[AbstractSet[str]] | None,
    tables: RuleTables,
    components: Components,
    period: Period,
    settings: MatchSettings,
) -> Chunk:
    c = len(profiles)
    query: list[int] = []
    exclude: list[int] = []
    cats: list[int] = []
    auths: list[int] = []
    about_row = [-1] * c
    about_coef = [0.0] * c
    has_sim = [False] * c
    about_texts: dict[str, int] = {}
    no_words: set[str] = set()
    like_rows: list[list[int]] = []
    indptr = [0]
    indices: list[int] = []
    data: list[float] = []
    sent_rows: list[int] = []
    sent_cols: list[int] = []
    rows = components.row
    position = period.position
    wa, wl = settings.about_weight, settings.like_weight
    background = -settings.background_weight
    for r, profile in enumerate(profiles):
        query.append(tables.query(profile.query))
        exclude.append(tables.query(profile.exclude))
        cats.append(tables.categories(profile.categories))
        auths.append(tables.authors(profile.authors))
        likes = [rows[i] for i in profile.like if i in rows] if profile.like else []
        like_rows.append(likes)
        about = profile.about or None
        if (
            about is not None
            and about not in about_texts
            and (about in no_words or not words(about))
        ):
            no_words.add(about)
            about = None
        denominator = (wa if about else 0.0) + (wl if likes else 0.0)
        if denominator > 0:
            has_sim[r] = True
            indices.append(0)
            data.append(background)
            if about:
                about_row[r] = about_texts.setdefault(about, len(about_texts))
                about_coef[r] = wa / denominator
            if likes:
                indices.extend(likes)
                data.extend([wl / (len(likes) * denominator)] * len(likes))
        if profile.dislike:
            dislikes = [rows[i] for i in profile.dislike if i in rows]
            indices.extend(dislikes)
            data.extend([-settings.dislike_weight / len(dislikes)] * len(dislikes))
        indptr.append(len(indices))
        if exclude_ids is not None and exclude_ids[r]:
            sent = exclude_ids[r]
            small, large = (sent, position) if len(sent) < period.n else (position, sent)
            for pid in small:
                if pid in large:
                    sent_rows.append(r)
                    sent_cols.append(position[pid])
    weights = sp.csr_matrix(
        (np.array(data, dtype=np.float32), np.array(indices, dtype=np.int32), indptr),
        shape=(c, components.pad_row),
    )
    return Chunk(
        np.array(query, dtype=np.int32),
        np.array(exclude, dtype=np.int32),
        np.array(cats, dtype=np.int32),
        np.array(auths, dtype=np.int32),
        np.array(about_row, dtype=np.int32),
        np.array(about_coef, dtype=np.float32),
        list(about_texts),
        weights,
        np.array(has_sim, dtype=bool),
        like_rows,
        np.array([max(p.max_items, 0) for p in profiles], dtype=np.int64),
        np.array([p.min_score for p in profiles], dtype=np.float32),
        np.array(sent_rows, dtype=np.int64),
        np.array(sent_cols, dtype=np.int64),
    )


@dataclass(frozen=True, slots=True)
class Scored:
    """Top items of every profile of a chunk, and what the reasons need."""

    selected: I64  # profiles × k paper indices, best first
    valid: Bools  # profiles × k: the slot holds an eligible paper
    score: F64  # profiles × k, rounded to 1e-6
    query_hit: Bools
    author_hit: Bools
    category_hit: Bools
    about_sim: F32  # profiles × k (0 without about)
    like_best: I64  # profiles × k: component row of the most similar liked paper (-1: none)
    like_sim: F32
    allowed: Bools  # profiles × papers: not excluded, not already sent (for trending)


def similarity(
    chunk: Chunk, period: Period, components: Components, model: TfidfModel
) -> tuple[F32, F32]:
    """Similarity (profiles × papers) as defined in ``MatchSettings``, and about cosines.

    The second matrix has one row per distinct about text of the chunk.
    """
    sims = np.asarray(chunk.weights @ components.sims[:-1], dtype=np.float32)
    about = np.zeros((0, period.n), dtype=np.float32)
    if chunk.about_texts:
        vectors = model.transform([(words(t), []) for t in chunk.about_texts])
        about = np.asarray((vectors @ period.vectors.T).toarray(), dtype=np.float32)
        who = np.flatnonzero(chunk.about_row >= 0)
        sims[who] += chunk.about_coef[who, None] * about[chunk.about_row[who]]
    return sims, about


def combine(sims: F32, q: Bools, a: Bools, c: Bools, settings: MatchSettings) -> F32:
    """score = similarity + boosts of the rule hits (float32, as ranked)."""
    score = sims.copy()
    score += np.float32(settings.query_boost) * q
    score += np.float32(settings.author_boost) * a
    score += np.float32(settings.category_boost) * c
    return score


def admitted(
    sims: F32, q: Bools, a: Bools, c: Bools, has_sim: Bools, settings: MatchSettings
) -> Bools:
    """A rule hit, or a similarity vector and a similarity at or above the threshold."""
    ok = q | a | c
    ok |= has_sim[:, None] & (sims >= np.float32(settings.similarity_threshold))
    return ok


def score_chunk(
    chunk: Chunk,
    period: Period,
    tables: RuleTables,
    components: Components,
    model: TfidfModel,
    settings: MatchSettings,
) -> Scored:
    sims, about = similarity(chunk, period, components, model)
    table = tables.table
    q = table[chunk.query]
    a = table[chunk.authors]
    c = table[chunk.categories]
    allowed = ~table[chunk.exclude]
    if chunk.sent_rows.size:
        allowed[chunk.sent_rows, chunk.sent_cols] = False
    score = combine(sims, q, a, c, settings)
    ok = admitted(sims, q, a, c, chunk.has_sim, settings)
    ok &= allowed
    ok &= score >= chunk.min_score[:, None]
    key = np.rint(score.astype(np.float64) * 1e6).astype(np.int64) * period.pad
    key += period.tiebreak
    key[~ok] = _NONE
    k = int(min(period.n, chunk.max_items.max(initial=0)))
    rows = np.arange(len(key))[:, None]
    if k == 0:
        selected = np.zeros((len(key), 0), dtype=np.int64)
    else:
        part = np.argpartition(-key, k - 1, axis=1)[:, :k] if k < period.n else None
        candidates = part if part is not None else np.broadcast_to(np.arange(period.n), key.shape)
        order = np.argsort(-key[rows, candidates], axis=1)
        selected = np.take_along_axis(candidates, order, axis=1).astype(np.int64)
    valid = (key[rows, selected] != _NONE) & (np.arange(k)[None, :] < chunk.max_items[:, None])
    about_sim = np.zeros(selected.shape, dtype=np.float32)
    who = np.flatnonzero(chunk.about_row >= 0)
    if who.size:
        about_sim[who] = about[chunk.about_row[who][:, None], selected[who]]
    like_best, like_sim = _best_like(chunk, components, selected)
    return Scored(
        selected,
        valid,
        np.asarray(np.round(score[rows, selected].astype(np.float64), 6), dtype=np.float64),
        q[rows, selected],
        a[rows, selected],
        c[rows, selected],
        about_sim,
        like_best,
        like_sim,
        allowed,
    )


def _best_like(chunk: Chunk, components: Components, selected: I64) -> tuple[I64, F32]:
    c, k = selected.shape
    best = np.full((c, k), -1, dtype=np.int64)
    value = np.zeros((c, k), dtype=np.float32)
    if k == 0:
        return best, value
    counts = np.array([len(rows) for rows in chunk.like_rows])
    small = np.flatnonzero((counts > 0) & (counts <= _MAX_PADDED_LIKES))
    if small.size:
        width = int(counts[small].max())
        padded = np.full((small.size, width), components.pad_row, dtype=np.int64)
        for i, r in enumerate(small):
            padded[i, : counts[r]] = chunk.like_rows[r]
        gathered = components.sims[padded[:, :, None], selected[small][:, None, :]]
        arg = gathered.argmax(axis=1)
        best[small] = np.take_along_axis(padded, arg, axis=1)
        value[small] = gathered.max(axis=1)
    for r in np.flatnonzero(counts > _MAX_PADDED_LIKES):
        rows = np.array(chunk.like_rows[r], dtype=np.int64)
        gathered = components.sims[rows[:, None], selected[r][None, :]]
        arg = gathered.argmax(axis=0)
        best[r] = rows[arg]
        value[r] = gathered.max(axis=0)
    return best, value
