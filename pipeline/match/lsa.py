"""Latent semantic analysis: a dense, low-rank text similarity learned from the window.

TF-IDF only sees shared words; two abstracts about the same topic in different
words score 0. LSA projects TF-IDF rows onto the top right singular vectors of
the window's TF-IDF matrix (``dimensions`` of them), where co-occurring words
share directions; the cosine of two projected rows blends into the TF-IDF
cosine (``MatchSettings.lsa_weight``). bench/MATCH.md has the measurements.

Each singular direction is weighted by the square root of its singular value:
a document's coordinates are U·Σ^½ rather than LSA's usual U·Σ, which keeps the
few dominant directions (vocabulary shared by the whole field) from outvoting
the topical ones. Caron (2001, "Experiments with LSA scoring: optimal rank and
basis") found exponents below 1 retrieve better; on the labelled eval capture
½ raised precision@10 and recall@50 of liked-paper profiles on every LSA seed and
draw tried (bench/MATCH.md).

The singular vectors come from a randomized SVD (Halko, Martinsson & Tropp,
2011: a Gaussian sketch, four power iterations with QR re-orthonormalisation),
run on the document side so every dense step is documents × (dimensions + 10)
and the terms only meet sparse products; a fixed seed makes fitting the same
window twice give the same projection.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from pipeline.match.dense import row_blocks, row_stable_product

__all__ = ["Lsa"]

F32 = npt.NDArray[np.float32]
_OVERSAMPLE = 64
_POWER_ITERATIONS = 6
_SCALING = 0.5  # document coordinates U·Σ^_SCALING (see the module docstring)


@dataclass(frozen=True, slots=True)
class Lsa:
    projection: F32  # terms × dimensions

    @classmethod
    def fit(cls, vectors: sp.csr_matrix, dimensions: int, *, seed: int = 0) -> Lsa | None:
        """Top ``dimensions`` right singular vectors of ``vectors`` (documents × terms).

        None when the window is too small for that many: fewer than four
        documents per dimension, or fewer terms than dimensions.
        """
        docs, terms = vectors.shape
        if dimensions < 1 or docs < 4 * dimensions or terms <= dimensions:
            return None
        with threadpool_limits(1):  # multi-threaded BLAS thrashes on a busy machine
            return cls._fit(vectors, dimensions, seed)

    @classmethod
    def _fit(cls, vectors: sp.csr_matrix, dimensions: int, seed: int) -> Lsa:
        docs, terms = vectors.shape
        x = sp.csr_matrix(vectors, dtype=np.float64)
        xt = sp.csr_matrix(x.T)
        width = min(dimensions + _OVERSAMPLE, docs, terms)
        rng = np.random.default_rng(seed)
        # Range finder on the document side: every dense step is documents × width.
        y = np.asarray(x @ np.asarray(xt @ rng.standard_normal((docs, width))))
        for _ in range(_POWER_ITERATIONS):
            y = np.linalg.qr(y)[0]
            y = np.asarray(x @ np.asarray(xt @ y))
        q = np.linalg.qr(y)[0]
        # qᵀ·X·Xᵀ·q = W·diag(σ²)·Wᵀ: the left singular vectors of X are q·W.
        gram = q.T @ np.asarray(x @ np.asarray(xt @ q))
        values, vectors_w = np.linalg.eigh((gram + gram.T) / 2)
        top = np.argsort(values)[::-1][:dimensions]
        sigma = np.sqrt(np.maximum(values[top], 1e-12))
        left = q @ vectors_w[:, top]
        # Right singular vectors V = Xᵀ·U·Σ⁻¹ (a sparse × dense product); X·V = U·Σ, so
        # V·Σ^(s−1) gives the coordinates U·Σ^s.
        projection = np.asarray(xt @ (left / sigma)) * sigma ** (_SCALING - 1.0)
        return cls(np.ascontiguousarray(projection.astype(np.float32)))

    @property
    def dimensions(self) -> int:
        return int(self.projection.shape[1])

    def cosines(self, left: sp.csr_matrix, right: sp.csr_matrix) -> F32:
        """LSA cosine of every ``left`` row with every ``right`` row (dense); a row's
        values do not depend on the other rows of ``left`` (``row_stable_product``)."""
        with threadpool_limits(1):
            return row_stable_product(self.embed(left), self.embed(right))

    def blend_into(
        self, out: F32, left: sp.csr_matrix, right: sp.csr_matrix, weight: float
    ) -> None:
        """``out = (1 − weight)·out + weight·cosines(left, right)``, a block of rows of
        ``left`` at a time (``row_blocks``): no left × right temporary beyond the budget.
        Each row equals the one computed from ``cosines`` (rows are independent)."""
        keep, w = np.float32(1.0 - weight), np.float32(weight)
        with threadpool_limits(1):
            embedded, period = self.embed(left), self.embed(right)
            for a, b in row_blocks(out.shape[0], out.shape[1]):
                out[a:b] *= keep
                out[a:b] += w * row_stable_product(embedded[a:b], period)

    def embed(self, vectors: sp.csr_matrix) -> F32:
        """Projected rows, L2-normalised (a row with no known term stays zero)."""
        dense = np.asarray(vectors @ self.projection, dtype=np.float32)
        norms = np.linalg.norm(dense, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        out: F32 = (dense / norms).astype(np.float32)
        return out
