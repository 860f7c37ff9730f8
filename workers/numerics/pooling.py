"""Max pooling of NHWC maps over p x p windows, stride p, keeping its argmax for the backward beside it."""
from __future__ import annotations

import numpy as np


def max_pool(z: np.ndarray, p: int) -> tuple[np.ndarray, np.ndarray]:
    """(h, argmax): h (N, H//p, W//p, C) the window maxima, argmax (same shape, uint8) which of the window's
    p*p cells (row-major) held it; the first on ties. Rows and columns past the last whole window are dropped."""
    n, height, width, c = z.shape
    ho, wo = height // p, width // p
    h = z[:, 0:ho * p:p, 0:wo * p:p].copy()
    argmax = np.zeros(h.shape, np.uint8)
    for cell in range(1, p * p):
        i, j = divmod(cell, p)
        candidate = z[:, i:ho * p:p, j:wo * p:p]
        better = candidate > h
        np.copyto(h, candidate, where=better)
        argmax[better] = cell
    return h, argmax


def max_pool_backward(g: np.ndarray, argmax: np.ndarray, p: int, shape: tuple[int, ...]) -> np.ndarray:
    """dL/dz (shape) given dL/dh: each window's gradient goes to the cell that held its maximum."""
    dz = np.zeros(shape, g.dtype)
    ho, wo = g.shape[1:3]
    for cell in range(p * p):
        i, j = divmod(cell, p)
        dz[:, i:ho * p:p, j:wo * p:p] = np.where(argmax == cell, g, 0)
    return dz
