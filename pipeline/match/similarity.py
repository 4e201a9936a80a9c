"""TF-IDF text vectors over title + abstract, with numpy/scipy only.

Features are the stems of ``pipeline.match.text`` (stop words dropped) and,
optionally, pairs of adjacent stems. Weights are sublinear term frequency
(``1 + ln tf``) times smoothed IDF (``ln((1 + N) / (1 + df)) + 1``), title
terms counted ``title_weight`` times, rows L2-normalised, so the dot product
of two rows is their cosine similarity. The vocabulary and IDF come from the
rolling window of stored papers given to ``fit``; a word never seen there
does not count.

``TextModel`` is the interface the engine uses; ``TfidfModel`` is its
implementation. Another backend (a local sentence embedding model) would
implement the same two methods and return dense L2-normalised rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Protocol

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from pipeline.match.text import STOPWORDS, stem

__all__ = ["TextModel", "TfidfModel", "Words"]

# (title words, abstract words), both from ``pipeline.match.text.words``.
Words = tuple[Sequence[str], Sequence[str]]


class TextModel(Protocol):
    """Maps documents to L2-normalised row vectors; row dot row = cosine similarity."""

    def transform(self, docs: Sequence[Words]) -> sp.csr_matrix: ...

    @property
    def dimension(self) -> int: ...


def _terms(doc: Sequence[str], bigrams: bool) -> list[str]:
    stems = [stem(w) for w in doc if w not in STOPWORDS and not w.isdigit()]
    if bigrams and len(stems) > 1:
        return stems + [f"{a} {b}" for a, b in pairwise(stems)]
    return stems


@dataclass(frozen=True, slots=True)
class TfidfModel:
    vocabulary: dict[str, int]
    idf: npt.NDArray[np.float32]
    bigrams: bool
    title_weight: int

    @classmethod
    def fit(
        cls,
        docs: Sequence[Words],
        *,
        min_df: int = 2,
        max_df: float = 0.5,
        bigrams: bool = True,
        title_weight: int = 2,
    ) -> TfidfModel:
        """Learn the vocabulary (``min_df`` ≤ df ≤ ``max_df``·N) and the IDF from ``docs``."""
        df: dict[str, int] = {}
        for title, abstract in docs:
            for term in set(_terms(title, bigrams)) | set(_terms(abstract, bigrams)):
                df[term] = df.get(term, 0) + 1
        n = len(docs)
        ceiling = max(max_df * n, min_df)
        kept = sorted(t for t, d in df.items() if min_df <= d <= ceiling)
        vocabulary = {t: i for i, t in enumerate(kept)}
        counts = np.array([df[t] for t in kept], dtype=np.float64)
        idf = (np.log((1.0 + n) / (1.0 + counts)) + 1.0).astype(np.float32)
        return cls(vocabulary, idf, bigrams, title_weight)

    @property
    def dimension(self) -> int:
        return len(self.vocabulary)

    def transform(self, docs: Sequence[Words]) -> sp.csr_matrix:
        """One L2-normalised row per document (an all-zero row when no term is known)."""
        rows: list[int] = []
        cols: list[int] = []
        vals: list[float] = []
        vocab = self.vocabulary
        weight = float(self.title_weight)
        for r, (title, abstract) in enumerate(docs):
            for part, w in ((title, weight), (abstract, 1.0)):
                ids = [vocab[t] for t in _terms(part, self.bigrams) if t in vocab]
                rows.extend([r] * len(ids))
                cols.extend(ids)
                vals.extend([w] * len(ids))
        shape = (len(docs), self.dimension)
        tf = sp.csr_matrix(
            (np.array(vals, dtype=np.float32), (np.array(rows, dtype=np.int64), cols)),
            shape=shape,
            dtype=np.float32,
        )
        tf.sum_duplicates()
        tf.data = (1.0 + np.log(tf.data)) * self.idf[tf.indices]
        norms = np.sqrt(np.asarray(tf.multiply(tf).sum(axis=1)).ravel())
        norms[norms == 0] = 1.0
        return sp.csr_matrix(sp.diags(1.0 / norms).dot(tf), dtype=np.float32)
