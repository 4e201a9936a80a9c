"""Everything computed once per ``match`` call: the period's papers and the shared tables.

- ``Period``: the new papers in a fixed order (deduplicated by id), their index
  for rules, their TF-IDF rows, their dot product with the window's mean vector,
  and the tie-break rank used when two scores are equal.
- ``RuleTables``: one bool row per distinct query, exclude query, category list
  and author list, memoised, so a profile's rules are four small integers.
- ``Components``: one dense row of cosines (against every period paper) per
  distinct liked or disliked paper; row 0 is the background (window mean).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from pipeline.domain import Paper
from pipeline.match.index import PeriodIndex, mask_to_bools
from pipeline.match.similarity import TfidfModel
from pipeline.match.text import words

__all__ = ["Components", "Period", "RuleTables"]

_TYPE_RANK = {"new": 0, "cross": 1, None: 1, "replace": 2, "replace-cross": 3}

F32 = npt.NDArray[np.float32]
Bools = npt.NDArray[np.bool_]


class Period:
    """The papers of one period, in tie-break order.

    Equal scores are broken, in order, by: new submissions before cross-lists
    before replacements, then arXiv id ascending. Duplicate ids keep the first
    paper given (the store merges versions and sources before matching).
    """

    def __init__(self, papers: Sequence[Paper], model: TfidfModel, background: F32) -> None:
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
        pad = 1
        while pad <= self.n:
            pad <<= 1
        self.pad = pad
        # Higher tie-break wins: the first paper in order gets pad - 1.
        self.tiebreak = np.arange(pad - 1, pad - 1 - self.n, -1, dtype=np.int64)
        upvoted = [(-(p.upvotes or 0), i) for i, p in enumerate(ordered) if p.upvotes]
        self.trending_order = [i for _, i in sorted(upvoted)]


class RuleTables:
    """Bool rows over the period's papers, one per distinct rule value; row 0 is all False."""

    def __init__(self, period: Period) -> None:
        self.period = period
        self._rows: list[Bools] = [np.zeros(period.n, dtype=bool)]
        self._ids: dict[tuple[str, object], int] = {}
        self._table: Bools | None = None

    def _row(self, key: tuple[str, object], mask: int) -> int:
        self._rows.append(mask_to_bools(mask, self.period.n))
        self._ids[key] = len(self._rows) - 1
        self._table = None
        return len(self._rows) - 1

    def query(self, text: str | None) -> int:
        if not text:
            return 0
        found = self._ids.get(("q", text))
        return found if found is not None else self._row(("q", text), self.period.index.query(text))

    def categories(self, patterns: tuple[str, ...]) -> int:
        if not patterns:
            return 0
        found = self._ids.get(("c", patterns))
        if found is not None:
            return found
        mask = 0
        for pattern in patterns:
            mask |= self.period.index.category(pattern)
        return self._row(("c", patterns), mask)

    def authors(self, names: tuple[str, ...]) -> int:
        if not names:
            return 0
        found = self._ids.get(("a", names))
        if found is not None:
            return found
        mask = 0
        for name in names:
            mask |= self.period.index.author(name)
        return self._row(("a", names), mask)

    @property
    def table(self) -> Bools:
        if self._table is None:
            self._table = np.vstack(self._rows)
        return self._table


class Components:
    """Cosines between reference papers (liked/disliked) and every period paper.

    A reference paper's metadata comes from, in order: the ``liked`` mapping given
    to ``match``, the fitted window, the period itself. Ids found nowhere are
    ignored (``missing`` lists them, ``explain`` reports them).
    """

    def __init__(
        self,
        ids: Sequence[str],
        period: Period,
        model: TfidfModel,
        window: Mapping[str, int],
        window_vectors: sp.csr_matrix,
        liked: Mapping[str, Paper],
        background: F32,
    ) -> None:
        self.row: dict[str, int] = {}
        self.ids: list[str] = ["(background)"]
        self.missing: set[str] = set()
        parts: list[sp.csr_matrix] = [sp.csr_matrix(background.reshape(1, -1))]
        external: list[Paper] = []
        window_rows: list[int] = []
        order: list[tuple[str, str]] = []
        for pid in dict.fromkeys(ids):
            if pid in liked:
                external.append(liked[pid])
                order.append(("x", pid))
            elif pid in window:
                window_rows.append(window[pid])
                order.append(("w", pid))
            elif pid in period.position:
                external.append(period.papers[period.position[pid]])
                order.append(("x", pid))
            else:
                self.missing.add(pid)
        ext = model.transform([(words(p.title), words(p.abstract)) for p in external])
        win = window_vectors[window_rows]
        parts.append(ext)
        parts.append(win)
        ext_ids = [pid for kind, pid in order if kind == "x"]
        win_ids = [pid for kind, pid in order if kind == "w"]
        for pid in [*ext_ids, *win_ids]:
            self.row[pid] = len(self.ids)
            self.ids.append(pid)
        stacked = sp.vstack(parts, format="csr", dtype=np.float32)
        dense = np.asarray((stacked @ period.vectors.T).toarray(), dtype=np.float32)
        # A final row of -inf lets padded gathers ignore padding when taking a maximum.
        self.sims: F32 = np.vstack([dense, np.full((1, period.n), -np.inf, dtype=np.float32)])
        self.pad_row = self.sims.shape[0] - 1
