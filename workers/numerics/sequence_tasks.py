"""Sequence data in time-major layout (T, batch, features): the Copy and Repeat Copy tasks, MNIST as sequences."""

from __future__ import annotations

import numpy as np

MNIST_SIDE = 28


PER_STEP_TASKS = ("copy", "repeat-copy")   # a label per step, -1 where nothing is scored


def copy_task_dims(n_symbols: int, repeats: int = 0) -> tuple[int, int]:
    """(n_in, n_classes): a channel per symbol and the delimiter (Repeat Copy: and the repeat count); outputs
    are symbols. repeats 0: the Copy task."""
    return n_symbols + 1 + (repeats > 0), n_symbols


def copy_steps(seq_len: int, repeats: int = 0) -> int:
    """Steps a sequence of seq_len symbols takes: read, delimiter, write once (Copy) or up to `repeats` times."""
    return seq_len + 1 + max(repeats, 1) * seq_len


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
    return _read_then_write(rng, batch, seq_len, n_symbols, 0, dtype)


def repeat_copy_task(rng: np.random.Generator, batch: int, seq_len: int, repeats: int, n_symbols: int = 8,
                     dtype=np.float32) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The Repeat Copy task (Graves et al. 2014, Jaderberg et al. 2016): read L symbols and a count R, drawn
    from 1 .. repeats for each sequence, then write the L symbols R times over.

    As copy_task, with T_total = L + 1 + repeats * L and one more input channel (the last): the count,
    as R / repeats, on the delimiter's step. Steps L+1 .. L+R*L are scored, s_{(t-L-1) mod L}; the
    steps after them are silence, unscored. Returns xs, ys, mask as copy_task does.
    """
    if repeats < 1:
        raise ValueError(f"need repeats >= 1, got {repeats}")
    return _read_then_write(rng, batch, seq_len, n_symbols, repeats, dtype)


def _read_then_write(rng, batch: int, seq_len: int, n_symbols: int, repeats: int, dtype):
    """Copy (repeats 0: no count, written once) or Repeat Copy; see their docstrings."""
    if seq_len < 1 or n_symbols < 1:
        raise ValueError(f"need seq_len >= 1 and n_symbols >= 1, got {seq_len}, {n_symbols}")
    n_in, _ = copy_task_dims(n_symbols, repeats)
    L, T = seq_len, copy_steps(seq_len, repeats)
    symbols = rng.integers(0, n_symbols, size=(L, batch))
    # Drawn only for Repeat Copy, so that the Copy task's sequences stay those of every seed before it.
    counts = rng.integers(1, repeats + 1, size=batch) if repeats else np.ones(batch, np.int64)
    xs = np.zeros((T, batch, n_in), dtype)
    t_idx, b_idx = np.indices((L, batch))
    xs[t_idx, b_idx, symbols] = 1.0
    xs[L, :, n_symbols] = 1.0
    if repeats:
        xs[L, :, n_symbols + 1] = counts / repeats
    written = np.arange(T - L - 1)                       # steps since the delimiter
    ys = np.zeros((T, batch), np.int64)
    ys[L + 1:] = symbols[written % L]
    mask = np.zeros((T, batch), dtype)
    mask[L + 1:] = written[:, None] < counts * L
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

