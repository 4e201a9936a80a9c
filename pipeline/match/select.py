"""Scoring all profiles chunk by chunk, on a few threads, into the compact result arrays.

Profiles that need the similarity product are scored first, in chunks of their
own, so a chunk of rule-only profiles never pays for it. A chunk has at most
``settings.chunk_size`` profiles and at most ``BLOCK_ELEMENTS`` profiles × papers
(a large period scores fewer profiles at a time; the result is the same). numpy and scipy release
the GIL inside their loops, so chunks scored on ``settings.threads`` threads run
in parallel; each chunk's output depends only on its rows, so the result does
not depend on the number of threads.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import numpy.typing as npt

from pipeline.match.compile import Compiled
from pipeline.match.dense import BLOCK_ELEMENTS
from pipeline.match.period import Period
from pipeline.match.scoring import chunk_scores, pick_trending, top_k
from pipeline.match.settings import MatchSettings

__all__ = ["Arrays", "select"]

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
# (start per profile, count per profile, flat paper indices, flat scores)
Arrays = tuple[I64, I64, I64, F64]
_Chunk = tuple[I64, I64, F64, I64, I64, F64]


def select(compiled: Compiled, period: Period, settings: MatchSettings) -> tuple[Arrays, Arrays]:
    """Interest items and trending items of every profile, as ragged arrays."""
    n = len(compiled.max_items)
    order = np.concatenate(
        [np.flatnonzero(compiled.product), np.flatnonzero(~compiled.product)]
    ).astype(np.int64)
    where = np.empty(n, dtype=np.int64)
    where[order] = np.arange(n)
    sent_at = where[compiled.sent_rows]
    by_position = np.argsort(sent_at, kind="stable")
    sent_at, sent_cols = sent_at[by_position], compiled.sent_cols[by_position]
    # a chunk is a few profiles × papers arrays: at most BLOCK_ELEMENTS elements each
    size = max(1, min(settings.chunk_size, BLOCK_ELEMENTS // max(period.n, 1)))
    boundary = int(compiled.product.sum())
    starts = sorted({*range(0, boundary, size), *range(boundary, n, size)})
    bounds = list(zip(starts, [*starts[1:], n], strict=True))

    def run(bound: tuple[int, int]) -> _Chunk:
        a, b = bound
        rows = order[a:b]
        chunk = chunk_scores(compiled, rows, settings)
        lo, hi = np.searchsorted(sent_at, [a, b])
        sent_r, sent_c = sent_at[lo:hi] - a, sent_cols[lo:hi]
        chunk.score[sent_r, sent_c] = -np.inf
        compiled.diversity.apply(chunk.score)  # among the candidates left
        r, p, s = top_k(chunk.score, compiled.max_items[rows])
        tr, tp, tv = pick_trending(
            chunk.code,
            compiled.trending[rows],
            period.trending_cols,
            period.upvotes,
            np.concatenate([r, sent_r]),
            np.concatenate([p, sent_c]),
        )
        return np.bincount(r, minlength=b - a), p, s, np.bincount(tr, minlength=b - a), tp, tv

    if settings.threads > 1 and len(bounds) > 1:
        with ThreadPoolExecutor(settings.threads, thread_name_prefix="match") as pool:
            done = list(pool.map(run, bounds))
    else:
        done = [run(bound) for bound in bounds]
    return (
        _ragged(order, [d[0] for d in done], [d[1] for d in done], [d[2] for d in done]),
        _ragged(order, [d[3] for d in done], [d[4] for d in done], [d[5] for d in done]),
    )


def _ragged(order: I64, counts: list[I64], values: list[I64], scores: list[F64]) -> Arrays:
    """Per-chunk outputs (chunks follow ``order``) → start and count per profile."""
    in_order = np.concatenate(counts) if counts else np.zeros(0, dtype=np.int64)
    start_in_order = np.concatenate([[0], np.cumsum(in_order)[:-1]]).astype(np.int64)
    start = np.empty_like(start_in_order)
    count = np.empty_like(in_order)
    start[order] = start_in_order
    count[order] = in_order
    flat = np.concatenate(values) if values else np.zeros(0, dtype=np.int64)
    flat_scores = np.concatenate(scores) if scores else np.zeros(0, dtype=np.float64)
    return start, count.astype(np.int64), flat.astype(np.int64), flat_scores
