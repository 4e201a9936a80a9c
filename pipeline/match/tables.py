"""Rows over the period's papers, one per DISTINCT profile component, built once per call.

- ``RuleTables``: one bit-packed row per distinct query, exclude query, category
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

from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import reduce
from operator import or_

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from pipeline.domain import Paper
from pipeline.match.dense import BLOCK_ELEMENTS, row_blocks, row_stable_product
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
    "pack_masks",
    "unpack_rows",
]

QUERY, AUTHOR, CATEGORY, EXCLUDE = 1, 2, 4, 8

U8 = npt.NDArray[np.uint8]
F32 = npt.NDArray[np.float32]


def masks_to_rows(masks: Sequence[int], n: int, bit: int) -> U8:
    """Python-int bit sets → a ``uint8`` matrix, one row per mask, ``bit`` where set."""
    return unpack_rows(pack_masks(masks, n), n, bit)


def pack_masks(masks: Sequence[int], n: int) -> U8:
    """Python-int bit sets → packed ``uint8`` rows (``ceil(n / 8)`` bytes, little bit order)."""
    width = (n + 7) // 8 or 1
    raw = np.frombuffer(b"".join(m.to_bytes(width, "little") for m in masks), dtype=np.uint8)
    return raw.reshape(len(masks), width)


def unpack_rows(packed: U8, n: int, bit: int) -> U8:
    """Packed rows → one ``uint8`` per paper, ``bit`` where set."""
    bits = np.unpackbits(packed, axis=1, count=n, bitorder="little")
    return bits * np.uint8(bit) if bit != 1 else bits


class RuleTables:
    """``query``, ``authors``, ``categories``, ``exclude``: (distinct + 1) rows over the
    papers, stored bit-packed (one bit per paper: 8× smaller than a byte per paper,
    so many distinct rules over a large period stay small). ``rows`` unpacks the
    rows a chunk of profiles needs (the rule's bit where it hits); ``at`` reads
    single (row, paper) pairs."""

    def __init__(
        self,
        period: Period,
        queries: Sequence[str],
        excludes: Sequence[str],
        categories: Sequence[tuple[str, ...]],
        authors: Sequence[tuple[str, ...]],
    ) -> None:
        index = period.index
        self.n = n = period.n
        self.queries = ["", *queries]
        self.excludes = ["", *excludes]
        self.category_lists: list[tuple[str, ...]] = [(), *categories]
        self.author_lists: list[tuple[str, ...]] = [(), *authors]
        self.query = pack_masks([0, *map(index.query, queries)], n)
        self.exclude = pack_masks([0, *map(index.query, excludes)], n)
        self.categories = pack_masks([0, *_union_masks(categories, index.category)], n)
        self.authors = pack_masks([0, *_union_masks(authors, index.author)], n)

    def rows(self, table: U8, ids: npt.NDArray[np.int32], bit: int) -> U8:
        """Rows ``ids`` of a packed ``table`` (one of the four), ``bit`` where it hits."""
        return unpack_rows(np.take(table, ids, axis=0), self.n, bit)

    @staticmethod
    def at(table: U8, ids: npt.NDArray[np.int32], cols: npt.NDArray[np.int64], bit: int) -> U8:
        """``bit`` where row ``ids[j]`` of a packed ``table`` hits paper ``cols[j]``, else 0."""
        hit: U8 = (table[ids, cols >> 3] >> (cols & 7).astype(np.uint8)) & np.uint8(1)
        return hit * np.uint8(bit) if bit != 1 else hit


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
            # cosine = (1 − w)·TF-IDF cosine + w·LSA cosine (in blocks of rows)
            lsa.blend_into(self.rows[1:], stacked, period.vectors, lsa_weight)
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
            left = embedding.rows(self.sources, abouts)
            texts = self.rows[1:]
            for a, b in row_blocks(texts.shape[0], texts.shape[1]):
                semantic = row_stable_product(left[a:b], period.embedded)
                texts[a:b] *= np.float32(1.0) - e
                texts[a:b] += e * semantic
            self.rows[0] *= np.float32(1.0) - e
            self.rows[0] += e * (period.embedded @ embedding.background)


def cosines(left: sp.csr_matrix, right: sp.csr_matrix, out: F32, threads: int) -> None:
    """``out[:] = left · rightᵀ`` (dense), for many left rows against few right rows.

    Only the terms that occur in ``right`` matter, so a block of ``right`` rows
    becomes a small dense (terms × rows) matrix and ``left`` keeps just those
    columns; the sparse × dense product then runs in row blocks on ``threads``
    threads (scipy releases the GIL). Both the dense block and each product
    block stay within ``BLOCK_ELEMENTS``: a period of 30,000 papers would
    otherwise make a terms × papers matrix of tens of GiB. Every value is the
    same as in one block: a left row's products are summed in its own term
    order, and terms a block leaves out only ever added exact zeros.
    """
    left_owner = np.repeat(np.arange(left.shape[0]), np.diff(left.indptr))
    column = np.full(left.shape[1] + 1, -1, dtype=np.int64)
    for c0, c1, terms in _right_blocks(right):
        part = right[c0:c1]
        dense = np.zeros((terms.size, c1 - c0), dtype=np.float32)
        rows = np.repeat(np.arange(c1 - c0), np.diff(part.indptr))
        dense[np.searchsorted(terms, part.indices), rows] = part.data
        column[terms] = np.arange(terms.size)
        mapped = column[left.indices]
        column[terms] = -1
        keep = mapped >= 0
        owner = left_owner[keep]
        compact = sp.csr_matrix(
            (
                left.data[keep],
                mapped[keep].astype(np.int32),
                np.concatenate([[0], np.cumsum(np.bincount(owner, minlength=left.shape[0]))]),
            ),
            shape=(left.shape[0], terms.size),
        )
        _product(compact, dense, out[:, c0:c1], threads)


def _right_blocks(right: sp.csr_matrix) -> Iterator[tuple[int, int, npt.NDArray[np.int32]]]:
    """``(start, stop, terms)``: consecutive row ranges of ``right`` whose dense
    terms × rows matrix fits ``BLOCK_ELEMENTS`` (one row at least), with their terms."""
    n = right.shape[0]
    step = n
    start = 0
    while start < n:
        stop = min(start + step, n)
        terms = np.unique(right.indices[right.indptr[start] : right.indptr[stop]])
        if terms.size * (stop - start) > BLOCK_ELEMENTS and stop - start > 1:
            # shrink to what the budget allows at this density, then retry
            step = max(1, min((stop - start) // 2, BLOCK_ELEMENTS // max(terms.size, 1)))
            continue
        yield start, stop, terms
        start = stop


def _product(compact: sp.csr_matrix, dense: F32, out: F32, threads: int) -> None:
    """``out[:] = compact @ dense`` in row blocks within ``BLOCK_ELEMENTS``, on threads."""
    blocks = list(row_blocks(compact.shape[0], dense.shape[1]))
    if threads > 1:
        # at least one block per thread, as before
        per = -(-compact.shape[0] // threads)
        blocks = [(a + s, min(a + s + per, b)) for a, b in blocks for s in range(0, b - a, per)]

    def run(block: tuple[int, int]) -> None:
        a, b = block
        out[a:b] = compact[a:b] @ dense

    if threads > 1 and len(blocks) > 1:
        with ThreadPoolExecutor(threads, thread_name_prefix="match") as pool:
            list(pool.map(run, blocks))
    else:
        for block in blocks:
            run(block)
