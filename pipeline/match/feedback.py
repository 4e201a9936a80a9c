"""A ranking term each reader's own examples teach: the categories of their "more" and
"less" papers.

The Rocchio part of the similarity (mean cosine to the liked papers − mean cosine to
the disliked ones) learns from the words of a few pressed papers, and measured
(bench/MATCH.md, "Feedback that learns") that is too little evidence to move a
category reader's digest: arxiv-sanity-lite's SVM retrained on the same presses did
no better. What a handful of presses does show well is which categories a reader
wants within what they follow — a ``cs.CL`` reader who presses "more" only on papers
cross-listed to ``cs.LG``. This is a linear model per reader over the papers'
category indicators, fitted in closed form on their examples (no loop per reader):

    a[g]   = (#liked papers in g − #disliked papers in g) / (#liked + #disliked + PRIOR)
    value  = clip(Σ a[g] over the paper's categories, −1, 1)
    bonus  = rank_feedback · value

Liked papers are the profile's ``like`` (the config's and the "more" presses, as
``plan.profile_with_feedback`` folds them in), disliked ones its ``dislike`` ("less"
presses). ``PRIOR`` keeps one press from counting fully. A reader with neither has
no term (no change); a paper's categories are read from the period, else from the
``liked`` metadata the planner passes; an unknown id counts for nothing. Like every
ranking term it is added to admitted papers only: it orders, never admits, and
"less" pushes down without sending anything back (pressed papers are removed as
``own_feedback``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import chain

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from pipeline.domain import Paper
from pipeline.match.period import Period
from pipeline.match.ranking import RankPart

__all__ = ["PRIOR", "FeedbackTables"]

I32 = npt.NDArray[np.int32]
F32 = npt.NDArray[np.float32]

PRIOR = 2.0  # pseudo-examples in the denominator: one press is not the whole story
DETAIL_CATEGORIES = 3  # categories named in explain


class FeedbackTables:
    """Per distinct like / dislike list, its category counts; per chunk, the term."""

    def __init__(
        self,
        period: Period,
        like_lists: Sequence[tuple[str, ...]],
        dislike_lists: Sequence[tuple[str, ...]],
        liked: Mapping[str, Paper],
        weight: float,
    ) -> None:
        self.weight = weight
        self.n = period.n
        names = sorted({c for p in period.papers for c in p.categories})
        self.names = names
        column = {c: g for g, c in enumerate(names)}
        lengths = np.fromiter((len(p.categories) for p in period.papers), np.int64, period.n)
        self.incidence = sp.csr_matrix(
            (
                np.ones(int(lengths.sum()), dtype=np.float32),
                np.fromiter(
                    (column[c] for p in period.papers for c in p.categories),
                    dtype=np.int64,
                    count=int(lengths.sum()),
                ),
                np.concatenate([[0], np.cumsum(lengths)]),
            ),
            shape=(period.n, len(names)),
        ).T.tocsr()  # categories × papers
        self.active = weight > 0 and period.n > 0 and any(chain(like_lists, dislike_lists))
        self.positive, self.positive_n = self._counts(like_lists, period, liked, column)
        self.negative, self.negative_n = self._counts(dislike_lists, period, liked, column)

    def _counts(
        self,
        lists: Sequence[tuple[str, ...]],
        period: Period,
        liked: Mapping[str, Paper],
        column: Mapping[str, int],
    ) -> tuple[sp.csr_matrix, F32]:
        """(lists × categories) counts of each list's distinct known papers, and how many
        papers each list has whose categories are known."""
        shape = (len(lists), len(self.names))
        if not self.active:
            return sp.csr_matrix(shape, dtype=np.float32), np.zeros(len(lists), np.float32)
        refs: dict[str, int] = {}
        ref_rows: list[int] = []
        ref_cols: list[int] = []
        for pid in set(chain.from_iterable(lists)):
            at = period.position.get(pid)
            paper = period.papers[at] if at is not None else liked.get(pid)
            if paper is not None and paper.categories:
                r = refs.setdefault(pid, len(refs))
                cats = {column[c] for c in paper.categories if c in column}
                ref_rows += [r] * len(cats)
                ref_cols += cats
        # each known paper's categories (papers × categories), then lists × papers
        by_paper = sp.csr_matrix(
            (np.ones(len(ref_rows), dtype=np.float32), (ref_rows, ref_cols)),
            shape=(len(refs), len(self.names)),
        )
        lengths = np.fromiter(map(len, lists), dtype=np.int64, count=len(lists))
        flat = np.fromiter(
            (refs.get(pid, -1) for pid in chain.from_iterable(lists)),
            dtype=np.int64,
            count=int(lengths.sum()),
        )
        owner = np.repeat(np.arange(len(lists), dtype=np.int64), lengths)
        known = flat >= 0
        members = sp.csr_matrix(
            (np.ones(int(known.sum()), dtype=np.float32), (owner[known], flat[known])),
            shape=(len(lists), len(refs)),
        )
        members.sum_duplicates()
        members.data[:] = 1.0  # a paper listed twice counts once
        sizes = np.asarray(members.sum(axis=1), dtype=np.float32).ravel()
        return sp.csr_matrix(members @ by_paper, dtype=np.float32), sizes

    def affinity(self, like: I32, dislike: I32) -> sp.csr_matrix:
        """a[g] per row (rows × categories), zero rows for readers without examples."""
        denominator = self.positive_n[like] + self.negative_n[dislike] + np.float32(PRIOR)
        scale = sp.diags((1.0 / denominator).astype(np.float32))
        return sp.csr_matrix(scale @ (self.positive[like] - self.negative[dislike]))

    def bonus(self, like: I32, dislike: I32) -> F32 | None:
        """The weighted term of a chunk (rows × papers), None when no row has examples."""
        if not self.active:
            return None
        if not (self.positive_n[like].any() or self.negative_n[dislike].any()):
            return None
        value = np.asarray((self.affinity(like, dislike) @ self.incidence).todense())
        out: F32 = (np.float32(self.weight) * np.clip(value, -1.0, 1.0)).astype(np.float32)
        return out

    def parts(self, like: int, dislike: int, col: int) -> tuple[RankPart, ...]:
        """The term of one (reader, paper) pair for ``explain`` (empty when it is zero)."""
        if not self.active or not (self.positive_n[like] or self.negative_n[dislike]):
            return ()
        a = self.affinity(np.array([like], np.int32), np.array([dislike], np.int32))
        row = np.asarray(a.todense()).ravel()
        cats = self.incidence[:, col].nonzero()[0]
        named = sorted(
            ((self.names[g], float(row[g])) for g in cats if row[g]), key=lambda t: -abs(t[1])
        )
        value = float(np.clip(sum(v for _, v in named), -1.0, 1.0))
        if not named:
            return ()
        shown = ", ".join(f"{c} {v:+.2f}" for c, v in named[:DETAIL_CATEGORIES])
        detail = f"categories of the papers you liked / pressed less on: {shown}"
        return (RankPart("feedback", "", value, self.weight, detail),)
