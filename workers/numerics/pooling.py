"""Max pooling of NHWC maps over p x p windows, stride p, keeping its argmax for the backward beside it."""
from __future__ import annotations

import numpy as np


def _max_along(z: np.ndarray, p: int, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """The maxima of each p consecutive entries along `axis`, and which of the p held it (uint8; the first on ties)."""
    def entry(k):
        return z[(slice(None),) * axis + (slice(k, None, p),)]
    out = entry(0).copy()
    arg = np.zeros(out.shape, np.uint8)
    better = np.empty(out.shape, bool)
    for k in range(1, p):
        np.greater(entry(k), out, out=better)
        np.maximum(out, entry(k), out=out)
        np.putmask(arg, better, k)   # contiguous: a masked copy from the strided entry is many times slower
    return out, arg


def max_pool(z: np.ndarray, p: int) -> tuple[np.ndarray, np.ndarray]:
    """(h, argmax): h (N, H//p, W//p, C) the window maxima, argmax (same shape, uint8) which of the window's
    p*p cells (row-major) held it. Rows and columns past the last whole window are dropped.

    Rows first, then columns: the rows' pass runs over whole rows of the map, the costly part of pooling
    strided cells C floats at a time.
    """
    height, width = z.shape[1] // p * p, z.shape[2] // p * p
    rows, row_arg = _max_along(z[:, :height, :width], p, axis=1)
    h, col_arg = _max_along(rows, p, axis=2)
    row_of = row_arg[:, :, 0::p].copy()   # the winning row within the winning column
    for j in range(1, p):
        row_of = np.where(col_arg == j, row_arg[:, :, j::p], row_of)
    row_of *= p
    row_of += col_arg
    return h, row_of


def max_pool_backward(g: np.ndarray, argmax: np.ndarray, p: int, shape: tuple[int, ...]) -> np.ndarray:
    """dL/dz (shape) given dL/dh: each window's gradient goes to the cell that held its maximum."""
    ho, wo = g.shape[1:3]
    whole = shape[1] == ho * p and shape[2] == wo * p
    dz = np.empty(shape, g.dtype) if whole else np.zeros(shape, g.dtype)   # every cell is written when whole
    for cell in range(p * p):
        i, j = divmod(cell, p)
        np.multiply(g, argmax == cell, out=dz[:, i:ho * p:p, j:wo * p:p])
    return dz
