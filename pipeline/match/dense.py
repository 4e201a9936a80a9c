"""A dense product whose rows do not depend on the rows computed with them."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["row_stable_product"]

F32 = npt.NDArray[np.float32]
_BLOCK = 1024  # rows per float64 product: keeps the temporaries at a few MB


def row_stable_product(left: F32, right: F32) -> F32:
    """``left @ right.T`` as float32, each row the same whatever other rows ``left`` has.

    BLAS picks its kernel, and so the order it sums in, by shape and position: in
    float32 a row computed among 2,000 others came out a few ulps away from the
    same row computed alone, so a reader matched alone (``Matcher.decide``, a
    preview) could score 1e-6 away from the planner's batch and flip a tie. Here
    the products run in float64 (a product of two float32 is exact there, and the
    sum of a few hundred is far more precise than float32) and are rounded to
    float32 once, in blocks of rows, written straight into the result.
    """
    right64 = np.ascontiguousarray(right.T, dtype=np.float64)
    out: F32 = np.empty((left.shape[0], right64.shape[1]), dtype=np.float32)
    buffer = np.empty((min(_BLOCK, left.shape[0]), right64.shape[1]), dtype=np.float64)
    for start in range(0, left.shape[0], _BLOCK):
        part = left[start : start + _BLOCK].astype(np.float64)
        rows = part.shape[0]
        np.matmul(part, right64, out=buffer[:rows])
        out[start : start + rows] = buffer[:rows]
    return out
