"""Max pooling of NHWC maps over p x p windows, stride p, keeping its argmax for the backward beside it."""
from __future__ import annotations

import numpy as np


def _windows(z: np.ndarray, p: int) -> np.ndarray:
    """(N, H//p, p, W//p, p, C): a view of z's whole windows, rows and columns past the last one dropped."""
    n, height, width, channels = z.shape
    return z[:, :height // p * p, :width // p * p].reshape(n, height // p, p, width // p, p, channels)


def max_pool(z: np.ndarray, p: int, out: tuple[np.ndarray, np.ndarray] | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
    """(h, argmax): h (N, H//p, W//p, C) the window maxima, argmax (same shape, uint8) which of the window's
    p*p cells (row-major) held it, the first on ties, written into `out` if given. Rows and columns past the
    last whole window are dropped.

    One pass per cell over a view of the windows: each reads whole runs of C floats, and the cells
    compared so far are the running maximum (no temporary the size of z).
    """
    windows = _windows(z, p)
    first = windows[:, :, 0, :, 0]
    h, argmax = out or (np.empty(first.shape, z.dtype), np.empty(first.shape, np.uint8))
    h[...] = first
    argmax.fill(0)
    better = np.empty(h.shape, bool)
    for cell in range(1, p * p):
        i, j = divmod(cell, p)
        np.greater(windows[:, :, i, :, j], h, out=better)
        np.maximum(h, windows[:, :, i, :, j], out=h)
        np.putmask(argmax, better, cell)
    return h, argmax


def max_pool_backward(g: np.ndarray, argmax: np.ndarray, p: int, dz: np.ndarray) -> np.ndarray:
    """dL/dz, written into dz (the map before the pooling), given dL/dh: each window's gradient goes to the
    cell that held its maximum."""
    if dz.shape[1] % p or dz.shape[2] % p:
        dz.fill(0)   # the rows and columns past the last whole window get none (else every cell is written)
    windows = _windows(dz, p)
    for cell in range(p * p):
        i, j = divmod(cell, p)
        np.multiply(g, argmax == cell, out=windows[:, :, i, :, j])
    return dz
