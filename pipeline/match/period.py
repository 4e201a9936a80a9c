"""The period: the new papers of one ``match`` call in a fixed order (deduplicated by id),
their index for rules, their TF-IDF rows, their dot product with the window's mean
vector, their trending order and, when the matcher has an embedding model, their
embeddings (encoded on first use). The shared per-component rows are in ``tables``."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from pipeline.domain import Paper
from pipeline.match.embedding import EmbeddingBlend
from pipeline.match.index import PeriodIndex
from pipeline.match.similarity import TfidfModel

__all__ = ["Period"]

_TYPE_RANK = {"new": 0, "cross": 1, None: 1, "replace": 2, "replace-cross": 3}

F32 = npt.NDArray[np.float32]


class Period:
    """The papers of one period, in tie-break order.

    Equal scores are broken, in order, by: new submissions before cross-lists
    before replacements, then arXiv id ascending. Duplicate ids keep the first
    paper given (the store merges versions and sources before matching).
    """

    def __init__(
        self,
        papers: Sequence[Paper],
        model: TfidfModel,
        background: F32,
        embedding: EmbeddingBlend | None = None,
    ) -> None:
        unique: dict[str, Paper] = {}
        for paper in papers:
            unique.setdefault(paper.id, paper)
        ordered = sorted(unique.values(), key=lambda p: (_TYPE_RANK[p.announce_type], p.id))
        self.papers = ordered
        self.n = len(ordered)
        self.ids = [p.id for p in ordered]
        self.position = {pid: i for i, pid in enumerate(self.ids)}
        self.index = PeriodIndex(ordered)
        docs = list(zip(self.index.title_words, self.index.abstract_words, strict=True))
        self.vectors: sp.csr_matrix = model.transform(docs)
        self.background: F32 = np.asarray(self.vectors @ background, dtype=np.float32).ravel()
        upvoted = [(-(p.upvotes or 0), i) for i, p in enumerate(ordered) if p.upvotes]
        self.trending_order = [i for _, i in sorted(upvoted)]
        self.trending_cols = np.array(self.trending_order, dtype=np.int64)
        self.upvotes = np.array([float(p.upvotes or 0) for p in ordered], dtype=np.float64)
        self.embedding = embedding

    @cached_property
    def embedded(self) -> F32:
        """The papers' embeddings (papers × dimension); only with an embedding model."""
        assert self.embedding is not None, "the matcher has no embedding model"
        return self.embedding.embedder.papers(self.papers)
