"""A dense product whose rows do not depend on the rows computed with them, and the
element budget every dense papers × papers or profiles × papers step is blocked by."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import numpy.typing as npt

__all__ = ["BLOCK_ELEMENTS", "row_blocks", "row_stable_product"]

F32 = npt.NDArray[np.float32]
_BLOCK = 1024  # rows per float64 product: keeps the temporaries at a few MB

# The largest dense temporary (in float32 elements, 64 MiB) a block of a
# left × right step may allocate: the term × paper matrix of ``tables.cosines``,
# a block of LSA or embedding cosines, the float64 buffer here (2 elements per
# value) and, in ``select``, the chunk of profiles × papers scored at once. A
# period of 30,000 papers (a week of downtime) is then worked through in blocks
# instead of allocating papers × papers at once (56 GiB once, at 28,000 papers).
# Only the result tables themselves (one float32 row per distinct text
# component, one uint8 row per distinct rule) grow with their row count.
BLOCK_ELEMENTS = 16 * 1024 * 1024


def row_blocks(rows: int, width: int, budget: int | None = None) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` row ranges of ``rows`` rows of ``width`` elements, each
    range at most ``budget`` (default ``BLOCK_ELEMENTS``) elements, at least one row."""
    step = max(1, (BLOCK_ELEMENTS if budget is None else budget) // max(width, 1))
    for start in range(0, rows, step):
        yield start, min(start + step, rows)


def row_stable_product(left: F32, right: F32, out: F32 | None = None) -> F32:
    """``left @ right.T`` as float32, each row the same whatever other rows ``left`` has.

    BLAS picks its kernel, and so the order it sums in, by shape and position: in
    float32 a row computed among 2,000 others came out a few ulps away from the
    same row computed alone, so a reader matched alone (``Matcher.decide``, a
    preview) could score 1e-6 away from the planner's batch and flip a tie. Here
    the products run in float64 (a product of two float32 is exact there, and the
    sum of a few hundred is far more precise than float32) and are rounded to
    float32 once, in blocks of rows (at most ``_BLOCK``, and at most
    ``BLOCK_ELEMENTS`` / 2 float64 values), written straight into ``out`` (a new
    array when not given).
    """
    right64 = np.ascontiguousarray(right.T, dtype=np.float64)
    width = right64.shape[1]
    if out is None:
        out = np.empty((left.shape[0], width), dtype=np.float32)
    block = max(1, min(_BLOCK, BLOCK_ELEMENTS // 2 // max(width, 1)))
    buffer = np.empty((min(block, left.shape[0]), width), dtype=np.float64)
    for start in range(0, left.shape[0], block):
        part = left[start : start + block].astype(np.float64)
        rows = part.shape[0]
        np.matmul(part, right64, out=buffer[:rows])
        out[start : start + rows] = buffer[:rows]
    return out
