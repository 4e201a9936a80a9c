"""Diversity: a paper that closely resembles a better-ranked candidate of the same
reader moves down, so the top of a digest is not ten variations of one paper.

This is maximal marginal relevance (MMR) with the similarity cut at a threshold so
that it stays a sparse, vectorised step: once per match call, every pair of the
period's papers whose cosine in the ranking space (the LSA coordinates when the
matcher has them, else TF-IDF) reaches ``diversity_threshold`` is listed; then per
reader, of each such pair where both papers are candidates (eligible, not already
sent), the one with the lower score (ties: the later in the period's order) loses

    rank_diversity · (cosine − threshold) / (1 − threshold)

taking the largest such penalty when it has several. The better paper keeps its
place; only the look-alike moves, and only by how alike it is. It never admits or
removes a paper. ``explain`` names the better-ranked paper and the cosine.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from pipeline.match.dense import BLOCK_ELEMENTS
from pipeline.match.ranking import RankPart

__all__ = ["Diversity"]

I64 = npt.NDArray[np.int64]
F32 = npt.NDArray[np.float32]
_NEG = np.float32(-np.inf)


@dataclass(frozen=True, slots=True)
class Diversity:
    """The period's look-alike pairs (a < b) and their penalty values in (0, 1]."""

    a: I64
    b: I64
    cosine: F32
    value: F32
    weight: float
    ids: tuple[str, ...]

    @classmethod
    def build(
        cls,
        space: F32 | sp.csr_matrix,
        ids: list[str],
        weight: float,
        threshold: float,
    ) -> Diversity:
        """Every pair of rows of ``space`` (L2-normalised) with cosine ≥ ``threshold``."""
        n = len(ids)
        a_parts: list[I64] = []
        b_parts: list[I64] = []
        c_parts: list[F32] = []
        if weight and n > 1 and threshold < 1.0:
            step = max(1, BLOCK_ELEMENTS // n)
            with threadpool_limits(1):
                for lo in range(0, n, step):
                    block = space[lo : lo + step] @ space.T
                    dense = np.asarray(block.toarray() if isinstance(block, sp.spmatrix) else block)
                    r, c = np.nonzero(dense >= threshold)
                    r = r + lo
                    keep = r < c
                    a_parts.append(r[keep].astype(np.int64))
                    b_parts.append(c[keep].astype(np.int64))
                    c_parts.append(dense[r[keep] - lo, c[keep]].astype(np.float32))
        a = np.concatenate(a_parts) if a_parts else np.zeros(0, np.int64)
        b = np.concatenate(b_parts) if b_parts else np.zeros(0, np.int64)
        cosine = np.concatenate(c_parts) if c_parts else np.zeros(0, np.float32)
        cosine = np.minimum(cosine, np.float32(1.0))
        span = max(1.0 - threshold, 1e-9)
        value = ((cosine - np.float32(threshold)) / np.float32(span)).astype(np.float32)
        return cls(a, b, cosine, np.clip(value, 0.0, 1.0), weight, tuple(ids))

    @property
    def active(self) -> bool:
        return bool(self.weight) and self.a.size > 0

    def _losers(self, score: F32) -> tuple[I64, I64, I64]:
        """(row, paper, pair) for each pair whose both papers are candidates of a row:
        the lower-scored paper of the pair (ties: ``b``, the later in period order)."""
        sa, sb = score[:, self.a], score[:, self.b]
        both = (sa > _NEG) & (sb > _NEG)
        rows, pair = np.nonzero(both)
        a_loses = sa[rows, pair] < sb[rows, pair]
        paper = np.where(a_loses, self.a[pair], self.b[pair])
        return rows.astype(np.int64), paper.astype(np.int64), pair.astype(np.int64)

    def apply(self, score: F32) -> None:
        """Subtract the penalty in place from a chunk's scores (rows × papers, −inf where
        not a candidate). Computed from the scores before any penalty."""
        if not self.active or score.size == 0:
            return
        rows, paper, pair = self._losers(score)
        if rows.size == 0:
            return
        penalty = np.zeros(score.shape, dtype=np.float32)
        np.maximum.at(penalty, (rows, paper), self.value[pair])
        score -= np.float32(self.weight) * penalty

    def parts(self, score: F32, col: int) -> tuple[RankPart, ...]:
        """The penalty of paper ``col`` for one row's scores (1 × papers, before it)."""
        if not self.active:
            return ()
        _, paper, pair = self._losers(score)
        mine = pair[paper == col]
        if mine.size == 0:
            return ()
        worst = int(mine[np.argmax(self.value[mine])])
        other = int(self.b[worst]) if int(self.a[worst]) == col else int(self.a[worst])
        detail = (
            f"resembles {self.ids[other]}, ranked above it (cosine {float(self.cosine[worst]):.2f})"
        )
        return (RankPart("diversity", "", -float(self.value[worst]), self.weight, detail),)
