"""``MatchResult``: the compact outcome of one match call, and its items built on demand.

The vectorised core stops at arrays: for every profile, the selected papers
(indices into the period), their rounded scores, then its trending papers. A
``MatchItem`` and its reason line are only built when ``items(i)`` asks for
profile *i*, from the same tables the scores came from, so a caller that
renders and sends one subscriber at a time never holds millions of objects.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import numpy.typing as npt

from pipeline.domain import MatchItem
from pipeline.match.compile import Compiled
from pipeline.match.period import Period
from pipeline.match.reasons import Reasons
from pipeline.match.settings import MatchSettings
from pipeline.match.tables import AUTHOR, CATEGORY, QUERY

__all__ = ["MatchResult"]

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]


class MatchResult:
    """Per profile *i*: ``papers[start[i] : start[i] + count[i]]`` (interest items, ranked),
    then ``trending_papers[trending_start[i] : ... + trending_count[i]]``.

    Paper values are indices into ``paper_ids`` (the period's papers, in
    tie-break order); ``scores`` are rounded to 1e-6, as ranked. ``period``,
    ``compiled``, ``reasons`` and ``settings`` are what the arrays were computed
    from (``pipeline.match.decision`` explains one pair from them).
    """

    def __init__(
        self,
        period: Period,
        compiled: Compiled | None,
        reasons: Reasons | None,
        interest: tuple[I64, I64, I64, F64],
        trending: tuple[I64, I64, I64, F64],
        settings: MatchSettings,
    ) -> None:
        self.paper_ids = period.ids
        self.start, self.count, self.papers, self.scores = interest
        (self.trending_start, self.trending_count, self.trending_papers, self.upvotes) = trending
        self.period = period
        self.compiled = compiled
        self.reasons = reasons
        self.settings = settings
        self._shared: dict[tuple[int, float, str], MatchItem] = {}

    def __len__(self) -> int:
        return len(self.start)

    def __iter__(self) -> Iterator[list[MatchItem]]:
        return (self.items(i) for i in range(len(self)))

    def selected(self, i: int) -> list[str]:
        """Paper ids of profile ``i``'s items, in order (interest, then trending)."""
        ids = self.paper_ids
        s, t = int(self.start[i]), int(self.trending_start[i])
        return [
            *(ids[p] for p in self.papers[s : s + self.count[i]].tolist()),
            *(ids[p] for p in self.trending_papers[t : t + self.trending_count[i]].tolist()),
        ]

    def items(self, i: int) -> list[MatchItem]:
        """Profile ``i``'s items with their reason lines (built now, memoised per rule)."""
        return self.items_range(i, i + 1)[0]

    def items_range(self, start: int, stop: int) -> list[list[MatchItem]]:
        """``[items(i) for i in range(start, stop)]``, with the reason inputs gathered
        for all these profiles at once (the fast way to build many)."""
        stop = min(stop, len(self))
        if start >= stop:
            return []
        ids = self.paper_ids
        owner, where = _spans(self.start[start:stop], self.count[start:stop])
        cols = self.papers[where]
        lines = self.reason_lines(owner + start, cols) if cols.size else []
        scores = self.scores[where].tolist()
        t_owner, t_where = _spans(self.trending_start[start:stop], self.trending_count[start:stop])
        t_cols = self.trending_papers[t_where].tolist()
        t_votes = self.upvotes[t_where].tolist()
        out: list[list[MatchItem]] = [[] for _ in range(stop - start)]
        # Equal items (same paper, score and reason) are one shared immutable object.
        shared = self._shared
        for o, p, score, reason in zip(owner.tolist(), cols.tolist(), scores, lines, strict=True):
            key = (p, score, reason)
            item = shared.get(key)
            if item is None:
                item = shared[key] = MatchItem(ids[p], score, reason)
            out[o].append(item)
        for o, p, votes in zip(t_owner.tolist(), t_cols, t_votes, strict=True):
            out[o].append(MatchItem(ids[p], votes, Reasons.trending(int(votes)), True))
        return out

    def reason_lines(self, owner: I64, cols: I64) -> list[str]:
        """The reason line of each (profile ``owner[j]``, paper ``cols[j]``) interest item."""
        c = self.compiled
        reasons = self.reasons
        assert c is not None and reasons is not None  # a non-empty result has both
        rules = c.rules
        n = reasons.n
        query, authors, cats = c.query[owner], c.authors[owner], c.categories[owner]
        code = rules.at(rules.query, query, cols, QUERY)
        code |= rules.at(rules.authors, authors, cols, AUTHOR)
        code |= rules.at(rules.categories, cats, cols, CATEGORY)
        columns = [
            list(map(memo.__getitem__, np.where(code & flag, rule * n + cols, -1).tolist()))
            for flag, rule, memo in (
                (QUERY, query, reasons.query_memo),
                (AUTHOR, authors, reasons.authors_memo),
                (CATEGORY, cats, reasons.categories_memo),
            )
        ]
        similar = [""] * cols.size
        sim_items, best, value, use_like = _similar(c, owner, cols)
        for j, b, v, liked in zip(sim_items, best, value, use_like, strict=True):
            similar[j] = reasons.liked(b, v) if liked else reasons.about(v)
        return list(map(_join, *columns, similar))


def _join(*parts: str) -> str:
    return "; ".join([p for p in parts if p])


def _spans(start: I64, count: I64) -> tuple[I64, I64]:
    """(owner, flat index) of every element of the spans ``[start, start + count)``."""
    total = int(count.sum())
    owner = np.repeat(np.arange(count.size), count)
    offset = np.concatenate([[0], np.cumsum(count)[:-1]]).astype(np.int64)
    return owner, np.repeat(start - offset, count) + np.arange(total)


def _similar(
    c: Compiled, owner: I64, cols: I64
) -> tuple[list[int], list[int], list[float], list[bool]]:
    """For items of profiles with similarity: the closest liked paper (texts row, first
    in the profile's order on ties) and its cosine, or the about cosine when closer."""
    items = np.flatnonzero(c.has_sim[owner])
    if items.size == 0:
        return [], [], [], []
    who, at = owner[items], cols[items]
    rows = c.texts.rows
    about = c.about[who]
    about_sim = np.where(about >= 0, rows[np.maximum(about, 0), at], np.float32(0.0))
    lr = c.like_rows
    lid = c.like_id[who]
    first, size = lr.indptr[lid].astype(np.int64), np.diff(lr.indptr)[lid].astype(np.int64)
    seg, pos = _spans(first, size)
    values = rows[lr.indices[pos], at[seg]]
    starts = np.concatenate([[0], np.cumsum(size)[:-1]]).astype(np.int64)
    has = size > 0
    best = np.full(items.size, -1, dtype=np.int64)
    like_sim = np.full(items.size, -np.inf, dtype=np.float32)
    if values.size:
        top = np.maximum.reduceat(values, starts[has])
        like_sim[has] = top
        marked = np.where(values == like_sim[seg], np.arange(values.size), values.size)
        best[has] = lr.indices[pos[np.minimum.reduceat(marked, starts[has])]]
    use_like = has & ((about < 0) | (like_sim >= about_sim))
    value = np.where(use_like, like_sim, about_sim)
    return items.tolist(), best.tolist(), value.tolist(), use_like.tolist()
