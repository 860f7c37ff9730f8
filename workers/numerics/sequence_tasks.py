"""Sequence data in time-major layout (T, batch, features): the Copy task and MNIST as sequences."""

from __future__ import annotations

import numpy as np

MNIST_SIDE = 28


def copy_task_dims(n_symbols: int) -> tuple[int, int]:
    """(n_in, n_classes) of copy_task: one channel per symbol plus the delimiter; outputs are symbols."""
    return n_symbols + 1, n_symbols


def copy_task(rng: np.random.Generator, batch: int, seq_len: int, n_symbols: int = 8,
              dtype=np.float32) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The Copy task (Graves et al. 2014, as used by Jaderberg et al. 2016): read L symbols, then echo them.

    With L = seq_len, T_total = 2L + 1 and n_in = n_symbols + 1 (last channel is the delimiter):

        step t          xs[t]                     ys[t]          mask[t]
        0 .. L-1        one-hot of symbol s_t      0 (unscored)   0
        L               delimiter channel = 1      0 (unscored)   0
        L+1 .. 2L       all zeros                  s_{t-L-1}      1

    Returns xs (T_total, batch, n_in) in dtype, ys int64 (T_total, batch), mask (T_total, batch) in dtype.
    """
    if seq_len < 1 or n_symbols < 1:
        raise ValueError(f"need seq_len >= 1 and n_symbols >= 1, got {seq_len}, {n_symbols}")
    n_in, _ = copy_task_dims(n_symbols)
    L, T = seq_len, 2 * seq_len + 1
    symbols = rng.integers(0, n_symbols, size=(L, batch))
    xs = np.zeros((T, batch, n_in), dtype)
    t_idx, b_idx = np.indices((L, batch))
    xs[t_idx, b_idx, symbols] = 1.0
    xs[L, :, n_symbols] = 1.0
    ys = np.zeros((T, batch), np.int64)
    ys[L + 1:] = symbols
    mask = np.zeros((T, batch), dtype)
    mask[L + 1:] = 1.0
    return xs, ys, mask


def row_sequences(x_images: np.ndarray) -> np.ndarray:
    """Sequential MNIST: images (n, 784) or (n, 28, 28) -> (28, n, 28), one pixel row per step.

    Returned contiguous so that any slice of steps (one time box's inputs) is a single buffer.
    """
    n = x_images.shape[0]
    return np.ascontiguousarray(x_images.reshape(n, MNIST_SIDE, MNIST_SIDE).transpose(1, 0, 2))


def chunk_sequences(x: np.ndarray, k: int) -> np.ndarray:
    """Split each flat vector (n, D), D = 784 for MNIST, into k equal consecutive chunks -> (k, n, D // k).

    Contiguous for the same reason as row_sequences. Raises ValueError unless k divides D.
    """
    n = x.shape[0]
    flat = x.reshape(n, -1)
    d = flat.shape[1]
    if k < 1 or d % k:
        raise ValueError(f"k={k} must be a positive divisor of the vector length {d}")
    return np.ascontiguousarray(flat.reshape(n, k, d // k).transpose(1, 0, 2))

