"""Profiles → small integers and one sparse weight matrix, without a Python loop per profile.

Every profile field is interned over its DISTINCT values (C-speed ``dict`` and
``map``), so per-profile work is a handful of dictionary lookups; everything
that costs more (evaluating a query, vectorising an about text, the cosines of
a liked paper) happens once per distinct value in ``tables``.

The similarity of profile *i* is ``W[i] · TextTables.rows`` with (see
``MatchSettings``)::

    W[i, background] = −background_weight                   when it has similarity
    W[i, about]      = about_weight / d
    W[i, liked p]    = like_weight / (d · #known liked)      for each known liked p
    W[i, disliked p] = −dislike_weight / #known disliked
    d = about_weight·[about] + like_weight·[known liked]
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from itertools import chain, count
from operator import attrgetter
from typing import TypeVar

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from pipeline.domain import Paper, Profile
from pipeline.match.coreaders import CoreaderCounts
from pipeline.match.diversity import Diversity
from pipeline.match.feedback import FeedbackTables
from pipeline.match.lsa import Lsa
from pipeline.match.period import Period
from pipeline.match.ranking import RankTables
from pipeline.match.settings import MatchSettings
from pipeline.match.similarity import TfidfModel
from pipeline.match.tables import RuleTables, TextTables

__all__ = ["Compiled", "compile_profiles"]

I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]
F32 = npt.NDArray[np.float32]
Bools = npt.NDArray[np.bool_]
H = TypeVar("H", bound=Hashable)


@dataclass(frozen=True, slots=True)
class Compiled:
    """All profiles of one call as arrays (index = profile position)."""

    rules: RuleTables
    texts: TextTables
    ranking: RankTables  # ranking terms per distinct rule, added to admitted papers
    feedback: FeedbackTables  # the term learned from each reader's liked/disliked papers
    diversity: Diversity  # look-alike pairs: the lower-ranked of each loses some score
    query: I32  # row of rules.query (0: none)
    exclude: I32
    categories: I32
    authors: I32
    about: I32  # row of texts.rows (-1: none)
    like_rows: sp.csr_matrix  # per distinct like tuple: its known papers' texts rows, in order
    like_id: I32  # row of like_rows (0: none)
    like_lists: list[tuple[str, ...]]  # per like_id: the liked ids as given (known or not)
    dislike_id: I32
    dislike_lists: list[tuple[str, ...]]  # per dislike_id: the disliked ids as given
    weights: sp.csr_matrix  # profiles × texts rows
    has_sim: Bools  # an about text or a known liked paper: similarity can admit
    product: Bools  # has_sim or a known disliked paper: needs weights · rows
    max_items: I64
    min_score: F32
    trending: I64
    sent_rows: I64  # (profile, paper) pairs already sent or liked/disliked, by profile
    sent_cols: I64
    own_rows: I64  # the (profile, paper) pairs among them that the reader liked or disliked
    own_cols: I64


def _intern(values: list[H]) -> tuple[I32, list[H]]:
    """Codes 1.. for distinct truthy values (first-seen order), 0 for None/empty.

    One hash per value, in C: ``setdefault`` maps each value to the position of
    its first occurrence, which a numpy table then renumbers densely.
    """
    first: dict[H, int] = {}
    at = np.fromiter(map(first.setdefault, values, count()), dtype=np.int64, count=len(values))
    distinct = [v for v in first if v]
    dense = np.zeros(len(values), dtype=np.int32)
    truthy = np.fromiter((first[v] for v in distinct), dtype=np.int64, count=len(distinct))
    dense[truthy] = np.arange(1, len(distinct) + 1, dtype=np.int32)
    return dense[at], distinct


def _set_rows(tuples: Sequence[tuple[str, ...]], rows: Mapping[str, int], k: int) -> sp.csr_matrix:
    """One row per tuple: 1/n on each of its n known members, in order (duplicates kept)."""
    lengths = np.fromiter(map(len, tuples), dtype=np.int64, count=len(tuples))
    members = chain.from_iterable(tuples)
    lookup = {v: rows.get(v, -1) for v in set(chain.from_iterable(tuples))}
    flat = np.fromiter(map(lookup.__getitem__, members), dtype=np.int64, count=int(lengths.sum()))
    owner = np.repeat(np.arange(len(tuples)), lengths)
    known = flat >= 0
    flat, owner = flat[known], owner[known]
    counts = np.bincount(owner, minlength=len(tuples))
    indptr = np.concatenate([[0], np.cumsum(counts)])
    data = (1.0 / np.maximum(counts, 1)[owner]).astype(np.float32)
    return sp.csr_matrix((data, flat.astype(np.int32), indptr), shape=(len(tuples), k))


def compile_profiles(
    profiles: Sequence[Profile],
    exclude_ids: Sequence[AbstractSet[str]] | None,
    period: Period,
    model: TfidfModel,
    window: Mapping[str, int],
    window_vectors: sp.csr_matrix,
    liked: Mapping[str, Paper],
    settings: MatchSettings,
    lsa: Lsa | None = None,
    coreaders: CoreaderCounts | None = None,
) -> Compiled:
    n = len(profiles)
    query, queries = _intern(list(map(attrgetter("query"), profiles)))
    exclude, excludes = _intern(list(map(attrgetter("exclude"), profiles)))
    cats, cat_lists = _intern(list(map(attrgetter("categories"), profiles)))
    auths, author_lists = _intern(list(map(attrgetter("authors"), profiles)))
    about, abouts = _intern(list(map(attrgetter("about"), profiles)))
    like_id, like_tuples = _intern(list(map(attrgetter("like"), profiles)))
    dislike_id, dislike_tuples = _intern(list(map(attrgetter("dislike"), profiles)))
    rules = RuleTables(period, queries, excludes, cat_lists, author_lists)
    references = {pid for t in (*like_tuples, *dislike_tuples) for pid in t}
    texts = TextTables(
        period,
        model,
        window,
        window_vectors,
        liked,
        sorted(references),
        abouts,
        settings.threads,
        lsa,
        settings.lsa_weight,
    )
    k = texts.rows.shape[0]

    like_rows = _set_rows([(), *like_tuples], texts.row, k)
    dislike_rows = _set_rows([(), *dislike_tuples], texts.row, k)
    n_like = np.diff(like_rows.indptr)[like_id]
    n_dislike = np.diff(dislike_rows.indptr)[dislike_id]
    about_ok = np.concatenate([[False], texts.about_ok])[about]
    about_row = np.where(about_ok, texts.about_base + about - 1, -1).astype(np.int32)
    wa, wl = np.float32(settings.about_weight), np.float32(settings.like_weight)
    denominator = wa * about_ok.astype(np.float32) + wl * (n_like > 0).astype(np.float32)
    has_sim = denominator > 0
    safe = np.where(has_sim, denominator, np.float32(1.0))
    who = np.flatnonzero(has_sim)
    background = sp.csr_matrix(
        (
            np.full(who.size, -settings.background_weight, dtype=np.float32),
            (who, np.zeros_like(who)),
        ),
        shape=(n, k),
    )
    abouts_at = np.flatnonzero(about_ok)
    about_part = sp.csr_matrix(
        ((wa / safe[abouts_at]).astype(np.float32), (abouts_at, about_row[abouts_at])),
        shape=(n, k),
    )
    like_part = sp.diags((wl / safe).astype(np.float32)) @ like_rows[like_id]
    dislike_part = np.float32(-settings.dislike_weight) * dislike_rows[dislike_id]
    weights = sp.csr_matrix(background + about_part + like_part + dislike_part, dtype=np.float32)
    weights.sum_duplicates()
    weights.sort_indices()

    sent_rows: list[int] = []
    sent_cols: list[int] = []
    if exclude_ids is not None:
        position = period.position
        for r, sent in enumerate(exclude_ids):
            if not sent:
                continue
            small, large = (sent, position) if len(sent) < period.n else (position, sent)
            for pid in small:
                if pid in large:
                    sent_rows.append(r)
                    sent_cols.append(position[pid])
    # A paper the reader liked or disliked is never sent back (it is its own best match).
    own_rows, own_cols = _own_pairs(
        like_id, [(), *like_tuples], dislike_id, [(), *dislike_tuples], period
    )
    all_rows = np.concatenate([np.array(sent_rows, dtype=np.int64), own_rows])
    all_cols = np.concatenate([np.array(sent_cols, dtype=np.int64), own_cols])
    by_row = np.argsort(all_rows, kind="stable")
    ranking = RankTables(period, rules, settings, lsa, model, coreaders)
    return Compiled(
        rules=rules,
        texts=texts,
        ranking=ranking,
        diversity=Diversity.build(
            ranking.space, period.ids, settings.rank_diversity, settings.diversity_threshold
        ),
        feedback=FeedbackTables(
            period, [(), *like_tuples], [(), *dislike_tuples], liked, settings.rank_feedback
        ),
        query=query,
        exclude=exclude,
        categories=cats,
        authors=auths,
        about=about_row,
        like_rows=like_rows,
        like_id=like_id,
        like_lists=[(), *like_tuples],
        dislike_id=dislike_id,
        dislike_lists=[(), *dislike_tuples],
        weights=weights,
        has_sim=has_sim,
        product=has_sim | (n_dislike > 0),
        max_items=np.maximum(
            np.fromiter(map(attrgetter("max_items"), profiles), dtype=np.int64, count=n), 0
        ),
        min_score=np.fromiter(map(attrgetter("min_score"), profiles), dtype=np.float32, count=n),
        trending=np.maximum(
            np.fromiter(map(attrgetter("trending"), profiles), dtype=np.int64, count=n), 0
        ),
        sent_rows=all_rows[by_row],
        sent_cols=all_cols[by_row],
        own_rows=own_rows,
        own_cols=own_cols,
    )


def _own_pairs(
    like_id: I32,
    likes: Sequence[tuple[str, ...]],
    dislike_id: I32,
    dislikes: Sequence[tuple[str, ...]],
    period: Period,
) -> tuple[I64, I64]:
    """(profile, paper) for every liked or disliked paper that is among the period's
    papers, sorted by profile: per distinct list, then spread over its profiles."""
    rows: list[I64] = []
    cols: list[I64] = []
    position = period.position
    if not any(p in position for t in (*likes, *dislikes) for p in t):
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    for ids, lists in ((like_id, likes), (dislike_id, dislikes)):
        found = [[position[p] for p in dict.fromkeys(t) if p in position] for t in lists]
        size = np.fromiter(map(len, found), dtype=np.int64, count=len(found))
        if not size.any():
            continue
        flat = np.fromiter(chain.from_iterable(found), dtype=np.int64, count=int(size.sum()))
        first = np.concatenate([[0], np.cumsum(size)[:-1]]).astype(np.int64)
        per = size[ids]
        owner = np.repeat(np.arange(ids.size, dtype=np.int64), per)
        offset = np.arange(int(per.sum())) - np.repeat(np.cumsum(per) - per, per)
        rows.append(owner)
        cols.append(flat[np.repeat(first[ids], per) + offset])
    if not rows:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    r, c = np.concatenate(rows), np.concatenate(cols)
    order = np.lexsort((c, r))
    return r[order], c[order]
