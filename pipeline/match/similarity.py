"""TF-IDF text vectors over title + abstract, with numpy/scipy only.

Features are the stems of ``pipeline.match.text`` (stop words and numbers
dropped) and, optionally, pairs of adjacent stems. Weights are sublinear term
frequency (``1 + ln tf``) times smoothed IDF (``ln((1 + N) / (1 + df)) + 1``),
title terms counted ``title_weight`` times, rows L2-normalised, so the dot
product of two rows is their cosine similarity. The vocabulary and IDF come
from the rolling window of stored papers given to ``fit``; a word never seen
there does not count.

Terms are integers, not strings: a stem is its id in ``stems``; a pair of
stems ``(a, b)`` is ``S + a·S + b`` with ``S = len(stems)``; the kept terms
are a sorted array, so vectorising is one dictionary lookup per word (memoised
per distinct word) plus numpy.

``TextModel`` is the interface the engine uses; ``TfidfModel`` is its
implementation. Another backend (a local sentence embedding model) would
implement the same two members and return dense L2-normalised rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Protocol

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from pipeline.match.text import STOPWORDS, stem

__all__ = ["TextModel", "TfidfModel", "Words"]

# (title words, abstract words), both from ``pipeline.match.text.words``.
Words = tuple[Sequence[str], Sequence[str]]
I64 = npt.NDArray[np.int64]
F32 = npt.NDArray[np.float32]

_DROPPED = -1  # stop word or number: removed before pairs are formed
_UNKNOWN = -2  # a stem the window never had: keeps its place, forms no term


class TextModel(Protocol):
    """Maps documents to L2-normalised row vectors; row dot row = cosine similarity."""

    def transform(self, docs: Sequence[Words]) -> sp.csr_matrix: ...

    @property
    def dimension(self) -> int: ...


class _StemIds(dict[str, int]):
    """word → stem id, computed on first use; ``grow`` adds unseen stems (fitting)."""

    def __init__(self, stems: dict[str, int], grow: bool) -> None:
        super().__init__()
        self.stems = stems
        self.grow = grow

    def __missing__(self, word: str) -> int:
        if word in STOPWORDS or word.isdigit():
            found = _DROPPED
        else:
            s = stem(word)
            found = self.stems.get(s, _UNKNOWN)
            if found == _UNKNOWN and self.grow:
                found = self.stems[s] = len(self.stems)
        self[word] = found
        return found


@dataclass(frozen=True, slots=True)
class _Tokens:
    ids: I64  # stem ids, stop words already removed (unknown stems kept as _UNKNOWN)
    doc: I64  # document of each token
    title: npt.NDArray[np.bool_]  # token comes from a title
    same_part: npt.NDArray[np.bool_]  # token i and i + 1 are adjacent in one field


def _tokens(docs: Sequence[Words], ids: _StemIds) -> _Tokens:
    lists: list[list[int]] = []
    for title, abstract in docs:
        lists.append(list(map(ids.__getitem__, title)))
        lists.append(list(map(ids.__getitem__, abstract)))
    lengths = np.fromiter(map(len, lists), dtype=np.int64, count=len(lists))
    flat = np.fromiter(chain.from_iterable(lists), dtype=np.int64, count=int(lengths.sum()))
    part = np.repeat(np.arange(len(lists), dtype=np.int64), lengths)
    kept = flat != _DROPPED
    flat, part = flat[kept], part[kept]
    return _Tokens(flat, part // 2, part % 2 == 0, part[:-1] == part[1:])


def _codes(tokens: _Tokens, n_stems: int, bigrams: bool) -> tuple[I64, I64, npt.NDArray[np.bool_]]:
    """(term code, document, from title) of every unigram and bigram occurrence."""
    ids = tokens.ids
    known = ids >= 0
    codes = [ids[known]]
    docs = [tokens.doc[known]]
    titles = [tokens.title[known]]
    if bigrams and ids.size > 1:
        pair = tokens.same_part & known[:-1] & known[1:]
        codes.append(n_stems + ids[:-1][pair] * n_stems + ids[1:][pair])
        docs.append(tokens.doc[:-1][pair])
        titles.append(tokens.title[:-1][pair])
    return np.concatenate(codes), np.concatenate(docs), np.concatenate(titles)


def _first_of_runs(values: I64) -> npt.NDArray[np.bool_]:
    """True where a sorted array's value differs from the previous one."""
    first = np.ones(values.size, dtype=bool)
    first[1:] = values[1:] != values[:-1]
    return first


@dataclass(frozen=True, slots=True)
class TfidfModel:
    stems: dict[str, int]
    terms: I64  # sorted term codes kept in the vocabulary; column j is terms[j]
    idf: F32
    bigrams: bool
    title_weight: int
    _ids: _StemIds = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_ids", _StemIds(self.stems, grow=False))

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
        stems: dict[str, int] = {}
        tokens = _tokens(docs, _StemIds(stems, grow=True))
        codes, doc, _ = _codes(tokens, len(stems), bigrams)
        n = len(docs)
        pairs = np.sort(codes * max(n, 1) + doc)  # sorted by term, then document
        pairs = pairs[_first_of_runs(pairs)] // max(n, 1)
        starts = np.flatnonzero(_first_of_runs(pairs))
        terms, df = pairs[starts], np.diff(np.append(starts, pairs.size))
        ceiling = max(max_df * n, min_df)
        keep = (df >= min_df) & (df <= ceiling)
        idf = (np.log((1.0 + n) / (1.0 + df[keep])) + 1.0).astype(np.float32)
        return cls(stems, terms[keep].astype(np.int64), idf, bigrams, title_weight)

    @property
    def dimension(self) -> int:
        return int(self.terms.size)

    def transform(self, docs: Sequence[Words]) -> sp.csr_matrix:
        """One L2-normalised row per document (an all-zero row when no term is known)."""
        shape = (len(docs), self.dimension)
        if not docs or not self.terms.size:
            return sp.csr_matrix(shape, dtype=np.float32)
        codes, doc, title = _codes(_tokens(docs, self._ids), len(self.stems), self.bigrams)
        col = np.searchsorted(self.terms, codes)
        col[col == self.terms.size] = 0
        found = self.terms[col] == codes
        weight = np.where(title, np.float32(self.title_weight), np.float32(1.0))
        tf = sp.csr_matrix(
            (weight[found].astype(np.float32), (doc[found], col[found])),
            shape=shape,
            dtype=np.float32,
        )
        tf.sum_duplicates()
        tf.data = ((1.0 + np.log(tf.data)) * self.idf[tf.indices]).astype(np.float32)
        norms = np.sqrt(
            np.bincount(
                np.repeat(np.arange(shape[0]), np.diff(tf.indptr)),
                weights=tf.data.astype(np.float64) ** 2,
                minlength=shape[0],
            )
        )
        norms[norms == 0] = 1.0
        tf.data /= np.repeat(norms, np.diff(tf.indptr)).astype(np.float32)
        return tf
