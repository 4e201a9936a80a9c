"""Rows over the period's papers, one per DISTINCT profile component, built once per call.

- ``RuleTables``: one ``uint8`` row per distinct query, exclude query, category
  list and author list. A hit is stored as the rule's bit (query 1, authors 2,
  categories 4, exclude 8), so OR-ing a profile's four rows gives one small
  code per (profile, paper) that says which rules hit; row 0 of each table is
  "no rule". Queries are evaluated as bit sets by ``PeriodIndex`` (memoised per
  distinct term and query); a list of categories or authors is the OR of its
  members' bit sets, each member evaluated once.
- ``TextTables``: one ``float32`` row of similarities per text component: row 0
  the paper's dot product with the window's mean vector (the background), then
  one row of cosines per referenced (liked or disliked) paper, sorted by id,
  then one per distinct ``about`` text. A cosine is the TF-IDF cosine blended
  with the LSA cosine when the matcher has an LSA projection, and that blended
  with the embedding cosine when it has an embedding model (``period.embedding``;
  the background row then blends in the dot product with the embedding background).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import reduce
from operator import or_

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from pipeline.domain import Paper
from pipeline.match.lsa import Lsa
from pipeline.match.period import Period
from pipeline.match.similarity import TfidfModel
from pipeline.match.text import words

__all__ = [
    "AUTHOR",
    "CATEGORY",
    "EXCLUDE",
    "QUERY",
    "RuleTables",
    "TextTables",
    "cosines",
    "masks_to_rows",
]

QUERY, AUTHOR, CATEGORY, EXCLUDE = 1, 2, 4, 8

U8 = npt.NDArray[np.uint8]
F32 = npt.NDArray[np.float32]


def masks_to_rows(masks: Sequence[int], n: int, bit: int) -> U8:
    """Python-int bit sets → a ``uint8`` matrix, one row per mask, ``bit`` where set."""
    width = (n + 7) // 8 or 1
    raw = np.frombuffer(b"".join(m.to_bytes(width, "little") for m in masks), dtype=np.uint8)
    bits = np.unpackbits(raw.reshape(len(masks), width), axis=1, bitorder="little")[:, :n]
    return bits * np.uint8(bit) if bit != 1 else bits


class RuleTables:
    """``query``, ``authors``, ``categories``, ``exclude``: uint8 (distinct + 1) × papers."""

    def __init__(
        self,
        period: Period,
        queries: Sequence[str],
        excludes: Sequence[str],
        categories: Sequence[tuple[str, ...]],
        authors: Sequence[tuple[str, ...]],
    ) -> None:
        index = period.index
        n = period.n
        self.queries = ["", *queries]
        self.excludes = ["", *excludes]
        self.category_lists: list[tuple[str, ...]] = [(), *categories]
        self.author_lists: list[tuple[str, ...]] = [(), *authors]
        self.query = masks_to_rows([0, *map(index.query, queries)], n, QUERY)
        self.exclude = masks_to_rows([0, *map(index.query, excludes)], n, EXCLUDE)
        self.categories = masks_to_rows([0, *_union_masks(categories, index.category)], n, CATEGORY)
        self.authors = masks_to_rows([0, *_union_masks(authors, index.author)], n, AUTHOR)


def _union_masks(lists: Sequence[tuple[str, ...]], member: object) -> list[int]:
    memo: dict[str, int] = {}
    for values in lists:
        for v in values:
            if v not in memo:
                memo[v] = member(v)  # type: ignore[operator]
    get = memo.__getitem__
    return [reduce(or_, map(get, values), 0) for values in lists]


class TextTables:
    """Similarity rows (float32, components × papers) and where each component lives.

    A referenced paper's metadata comes from, in order: the ``liked`` mapping,
    the fitted window, the period itself; ids found nowhere are listed in
    ``missing`` and ignored. ``about_ok[j]`` is False for an about text without
    a single word (it counts as no about text). ``abouts`` and, with an embedding
    model, ``sources`` (the paper of each referenced row ``1 + j``) are what the
    rows were encoded from, for explaining one cosine's embedding part.
    """

    def __init__(
        self,
        period: Period,
        model: TfidfModel,
        window: Mapping[str, int],
        window_vectors: sp.csr_matrix,
        liked: Mapping[str, Paper],
        references: Sequence[str],
        abouts: Sequence[str],
        threads: int = 1,
        lsa: Lsa | None = None,
        lsa_weight: float = 0.0,
    ) -> None:
        self.ids: list[str] = ["(background)"]
        self.row: dict[str, int] = {}
        self.missing: set[str] = set()
        external: list[Paper] = []
        window_rows: list[int] = []
        where: list[int] = []  # per found id: its row in [external..., window...]
        found: list[str] = []
        for pid in sorted(set(references)):
            if pid in liked:
                where.append(len(external))
                external.append(liked[pid])
            elif pid in window:
                where.append(-1 - len(window_rows))
                window_rows.append(window[pid])
            elif pid in period.position:
                where.append(len(external))
                external.append(period.papers[period.position[pid]])
            else:
                self.missing.add(pid)
                continue
            found.append(pid)
        for pid in found:
            self.row[pid] = len(self.ids)
            self.ids.append(pid)
        order = [w if w >= 0 else len(external) - 1 - w for w in where]
        about_words = [words(t) for t in abouts]
        self.about_ok = np.array([bool(w) for w in about_words], dtype=bool)
        self.about_base = len(self.ids)
        ext = model.transform([(words(p.title), words(p.abstract)) for p in external])
        about = model.transform([(w, []) for w in about_words])
        refs = sp.vstack([ext, window_vectors[window_rows]], format="csr")[order]
        stacked = sp.vstack([refs, about], format="csr")
        self.rows: F32 = np.empty((stacked.shape[0] + 1, period.n), dtype=np.float32)
        self.rows[0] = period.background
        cosines(stacked, period.vectors, self.rows[1:], threads)
        if lsa is not None and lsa_weight:
            # cosine = (1 − w)·TF-IDF cosine + w·LSA cosine
            self.rows[1:] *= np.float32(1.0 - lsa_weight)
            self.rows[1:] += np.float32(lsa_weight) * lsa.cosines(stacked, period.vectors)
        # what each text row was encoded from, for the embedding side (explained on demand)
        self.abouts: list[str] = list(abouts)
        self.sources: list[Paper] = []
        embedding = period.embedding
        if embedding is not None and embedding.weight and stacked.shape[0]:
            # cosine = (1 − e)·(the cosine above) + e·embedding cosine, and the background
            # likewise (only profiles with a text row use it: no rows, nothing to encode)
            e = np.float32(embedding.weight)
            sources = [*external, *(embedding.window[r] for r in window_rows)]
            self.sources = [sources[i] for i in order]
            semantic = embedding.cosines(self.sources, abouts, period.embedded)
            self.rows[1:] *= np.float32(1.0) - e
            self.rows[1:] += e * semantic
            self.rows[0] *= np.float32(1.0) - e
            self.rows[0] += e * (period.embedded @ embedding.background)


def cosines(left: sp.csr_matrix, right: sp.csr_matrix, out: F32, threads: int) -> None:
    """``out[:] = left · rightᵀ`` (dense), for many left rows against few right rows.

    Only the terms that occur in ``right`` matter, so ``right`` becomes a small
    dense (terms × rows) matrix and ``left`` keeps just those columns; the
    sparse × dense product then runs in row blocks on ``threads`` threads (scipy
    releases the GIL).
    """
    terms = np.unique(right.indices)
    dense = np.zeros((terms.size, right.shape[0]), dtype=np.float32)
    rows = np.repeat(np.arange(right.shape[0]), np.diff(right.indptr))
    dense[np.searchsorted(terms, right.indices), rows] = right.data
    column = np.full(left.shape[1] + 1, -1, dtype=np.int64)
    column[terms] = np.arange(terms.size)
    mapped = column[left.indices]
    keep = mapped >= 0
    owner = np.repeat(np.arange(left.shape[0]), np.diff(left.indptr))[keep]
    compact = sp.csr_matrix(
        (
            left.data[keep],
            mapped[keep].astype(np.int32),
            np.concatenate([[0], np.cumsum(np.bincount(owner, minlength=left.shape[0]))]),
        ),
        shape=(left.shape[0], terms.size),
    )
    blocks = np.array_split(np.arange(left.shape[0]), max(threads, 1))

    def run(block: npt.NDArray[np.int64]) -> None:
        if block.size:
            a, b = int(block[0]), int(block[-1]) + 1
            out[a:b] = compact[a:b] @ dense

    if threads > 1 and left.shape[0] > 1:
        with ThreadPoolExecutor(threads, thread_name_prefix="match") as pool:
            list(pool.map(run, blocks))
    else:
        for block in blocks:
            run(block)
