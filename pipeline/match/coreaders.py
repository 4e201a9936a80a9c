"""The co-reader ranking term: what other readers who were sent a paper pressed on it.

A "more" or "less" press comes from a reader the paper was sent to, so their
interests admitted it as well: the readers who pressed on a paper overlap in
interest with every reader it is admitted for. The planner reads, for the papers of
the window, how many distinct readers pressed "more" and how many "less" on each
(``store.coreader_counts``: counts only, never who) and passes them to the call
(``Matcher.match_compact(..., coreaders=)``), beside the reserved ids and the liked
papers' metadata; they are not part of what the matcher is fitted on. Per paper::

    net   = more − less
    value = min(1, log(1 + net) / log(1 + COREADERS_FULL))   when more + less ≥ MIN_PRESSERS
                                                              and net ≥ 1, else 0
    bonus = rank_coreaders · value

Like every ranking term it is added to admitted papers only: it orders, never admits.
``MIN_PRESSERS`` keeps one other reader's press from showing in a digest (with
``net ≥ 1`` it takes at least two "more" presses to move a paper). The reader's own
press is never counted for them: a paper the reader pressed is in their ``like`` or
``dislike`` (``plan.profile_with_feedback``), so it is never a candidate of theirs
(``own_feedback``), and every paper the term moves for them was pressed by others.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

from pipeline.match.period import Period

__all__ = ["COREADERS_FULL", "MIN_PRESSERS", "CoreaderCounts", "coreader_values", "describe"]

I32 = npt.NDArray[np.int32]
F32 = npt.NDArray[np.float32]

# {paper id: (distinct readers who pressed "more", distinct readers who pressed "less")}
CoreaderCounts = Mapping[str, tuple[int, int]]

MIN_PRESSERS = 2  # distinct pressers a paper needs before the term moves it
COREADERS_FULL = 10  # net "more" presses that count fully


def coreader_values(period: Period, counts: CoreaderCounts | None) -> tuple[F32, I32, I32]:
    """Per paper of the period: the term's value in [0, 1], and its "more" and "less"
    counts (what ``explain`` names). Ids of ``counts`` outside the period are ignored."""
    n = period.n
    more = np.zeros(n, dtype=np.int32)
    less = np.zeros(n, dtype=np.int32)
    if counts:
        position = period.position
        found = [(position[pid], m, x) for pid, (m, x) in counts.items() if pid in position]
        if found:
            cols, m, x = (np.array(v, dtype=np.int64) for v in zip(*found, strict=True))
            more[cols] = np.maximum(m, 0)
            less[cols] = np.maximum(x, 0)
    net = (more - less).astype(np.float32)
    moves = (more + less >= MIN_PRESSERS) & (net >= 1)
    value = np.zeros(n, dtype=np.float32)
    value[moves] = np.minimum(
        np.float32(1.0), np.log1p(net[moves]) / np.float32(math.log1p(COREADERS_FULL))
    )
    return value, more, less


def describe(more: int, less: int) -> str:
    """The ``explain`` line of a paper the term moved."""
    readers = "reader" if more == 1 else "readers"
    line = f"{more} other {readers} asked for more like this"
    return line + (f", {less} for less" if less else "")
