"""Same-padded 2-D convolution of NHWC maps: im2col by stride tricks and GEMMs, a chunk of examples at a time.

NHWC, not NCHW: the GEMM cols (N*H*W, K*K*C) @ W (K*K*C, F) writes (N*H*W, F), which is already the
next stage's NHWC map, and a flat row of the wire is NHWC as it is; NCHW would cost a transpose
of every output and of every incoming gradient.
"""
from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

# A batch is convolved a chunk of examples at a time, so a stage's memory does not grow with its batch (the
# default net's second stage kept 80 MiB of columns for a batch of 128). A chunk's columns take COLS_BYTES at
# most, unless that leaves its GEMMs fewer than GEMM_ROWS rows: the default net's second stage (196 rows an
# example) ran 5% slower in chunks of 3 examples and 23% in chunks of 1 than in chunks of 6, while its first
# stage ran as fast in chunks of 13 as of 53 and holds about 9 MiB less at its peak (its columns, its map
# before the pooling, its synthesizer's columns).
# The backward makes each chunk's columns again rather than keep the forward's: 5-8% of that stage's time.
COLS_BYTES = 2**20
GEMM_ROWS = 1024


def map_after(shape: tuple[int, int, int], filters: int, pool: int) -> tuple[int, int, int]:
    """The (height, width, channels) a conv stage with `filters` and pool x pool max pooling makes of `shape`."""
    height, width, _ = shape
    return height // pool, width // pool, filters


def stage_filters(conv: str) -> list[int]:
    """The filter counts of the --conv option's value (checked by the coordinator), one per conv stage."""
    return [int(v) for v in conv.split(",") if v.strip()]


def stage_pools(pool: str, stages: int) -> list[int]:
    """The pooling of each of `stages` conv stages from the --pool option's value (checked by the coordinator):
    one entry per stage, or a single one for all of them."""
    pools = [int(v) for v in pool.split(",") if v.strip()]
    return pools * stages if len(pools) == 1 else pools


def stage_maps(image: tuple[int, ...], filters: list[int], pools: list[int]) -> list[tuple[int, int, int]]:
    """The maps into each conv stage, then out of the last one: the input image first."""
    maps = [tuple(image)]
    for f, pool in zip(filters, pools, strict=True):
        maps.append(map_after(maps[-1], f, pool))
    return maps


class Conv2D:
    """z = conv(x, W) + b over same-padded K x K windows; x (N, H, W, C), z (N, H, W, F), float32.

    W is kept as the GEMM's (K*K*C, F) matrix, rows in (ky, kx, c) order. The padded input, the
    columns and the input gradient's working arrays are buffers of `chunk` examples, reused across
    batches (those of the input gradient made on its first use: a first stage never needs them).
    """

    def __init__(self, shape: tuple[int, int, int], filters: int, kernel: int, rng: np.random.Generator | None,
                 dtype=np.float32):
        """rng None: W starts at zero (a synthesizer's readout)."""
        self.shape, self.filters, self.kernel = shape, filters, kernel
        height, width, channels = shape
        fan_in = kernel * kernel * channels
        self.params = {"W": (np.zeros((fan_in, filters), dtype) if rng is None else
                             (rng.standard_normal((fan_in, filters)) * np.sqrt(2.0 / fan_in)).astype(dtype)),
                       "b": np.zeros(filters, dtype)}
        rows = height * width
        self.chunk = max(-(-GEMM_ROWS // rows), COLS_BYTES // (rows * fan_in * np.dtype(dtype).itemsize))
        self._held: dict[str, np.ndarray] = {}

    def _buffer(self, name: str, n: int, shape: tuple[int, ...], zero: bool = False) -> np.ndarray:
        """Buffer `name` as n examples of `shape` each, grown (never shrunk) as requests need; zero: made of
        zeros, for a padded buffer whose border no chunk writes (asked for in one shape only)."""
        size = n * math.prod(shape)
        held = self._held.get(name)
        if held is None or len(held) < size:
            held = self._held[name] = (np.zeros if zero else np.empty)(size, self.params["W"].dtype)
        return held[:size].reshape(n, *shape)

    def chunks(self, n: int):
        """(start, end) of each chunk of n examples, in order."""
        return ((s, min(s + self.chunk, n)) for s in range(0, n, self.chunk))

    def im2col(self, x: np.ndarray, scale: np.floating | None = None) -> np.ndarray:
        """The (n*H*W, K*K*C) columns of x (n <= chunk examples), or of x * scale, in the reused buffer."""
        n, (height, width, channels), k = len(x), self.shape, self.kernel
        p = (k - 1) // 2
        pad = self._buffer("pad", n, (height + k - 1, width + k - 1, channels), zero=True)
        cols = self._buffer("cols", n, (height * width, k * k * channels))
        if scale is None:
            pad[:, p:p + height, p:p + width] = x
        else:   # a synthesizer's normalised input, made a chunk at a time: never the whole batch's copy
            np.multiply(x, scale, out=pad[:, p:p + height, p:p + width])
        windows = sliding_window_view(pad, (k, k), axis=(1, 2))   # (n, H, W, C, K, K)
        np.copyto(cols.reshape(n, height, width, k, k, -1), windows.transpose(0, 1, 2, 4, 5, 3))
        return cols.reshape(n * height * width, -1)

    def forward(self, x: np.ndarray, out: np.ndarray | None = None, scale: np.floating | None = None) -> np.ndarray:
        """z (N, H, W, F), written into `out` if given (contiguous), else a new array; x (N, H, W, C), or its
        flat rows (N, H*W*C), times `scale` if given."""
        n, rows = len(x), self.shape[0] * self.shape[1]
        maps = x.reshape(n, *self.shape)
        z = np.empty((n, *self.shape[:2], self.filters), self.params["W"].dtype) if out is None else out
        flat = z.reshape(-1, self.filters)
        for s, e in self.chunks(n):
            part = flat[s * rows:e * rows]
            np.matmul(self.im2col(maps[s:e], scale), self.params["W"], out=part)
            part += self.params["b"]   # while the chunk's output is in cache
        return z

    def backward(self, x: np.ndarray, dz: np.ndarray, need_dx: bool = True, weights: np.ndarray | None = None,
                 scale: np.floating | None = None) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
        """({W, b} gradients, dL/dx (N, H, W, C) or None) given dL/dz; weights: the W that made z if it has
        changed since; scale: z was made of x * scale. Each chunk's columns are made again, then serve its input
        gradient's buffer."""
        n, rows = len(x), self.shape[0] * self.shape[1]
        maps = x.reshape(n, *self.shape)
        dz_flat = dz.reshape(-1, self.filters)
        w = self.params["W"]
        # The bias gradient as a GEMV: numpy's sum over axis 0 runs F floats at a time, 4x slower.
        grads = {"W": np.zeros_like(w), "b": np.ones(len(dz_flat), w.dtype) @ dz_flat}
        part = np.empty_like(w)
        dx = np.empty((n, *self.shape), w.dtype) if need_dx else None
        by_rows = self._row_weights(w if weights is None else weights) if need_dx else None
        for s, e in self.chunks(n):
            np.matmul(self.im2col(maps[s:e], scale).T, dz_flat[s * rows:e * rows], out=part)
            grads["W"] += part
            if need_dx:
                self._input_gradient(dz_flat[s * rows:e * rows], by_rows, dx[s:e])
        return grads, dx

    def input_gradient(self, dz: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        """dL/dx (N, H, W, C) given dL/dz, with the current weights (or `weights`), no parameter gradients."""
        by_rows = self._row_weights(self.params["W"] if weights is None else weights)
        dz_flat = dz.reshape(-1, self.filters)
        dx = np.empty((len(dz), *self.shape), by_rows.dtype)
        rows = self.shape[0] * self.shape[1]
        for s, e in self.chunks(len(dz)):
            self._input_gradient(dz_flat[s * rows:e * rows], by_rows, dx[s:e])
        return dx

    def _row_weights(self, w: np.ndarray) -> np.ndarray:
        """W as the (K*F, K*C) matrix of _input_gradient: row (t, f), column (ky, c) holds W's (ky, K-1-t, c, f),
        position t of a window along a row of dz meeting column offset K-1-t."""
        k, channels, filters = self.kernel, self.shape[2], self.filters
        return w.reshape(k, k, channels, filters)[:, ::-1].transpose(1, 3, 0, 2).reshape(k * filters, k * channels)

    def _input_gradient(self, dz_flat: np.ndarray, by_rows: np.ndarray, dx: np.ndarray) -> None:
        """dx (a chunk) given its dL/dz rows, by a GEMM over dz's windows along each row.

        Each pixel's K windows of dz along its row (K*F values) times the row weights give, in one GEMM,
        what each of the K row offsets sends to it (K*C values); K additions of those blocks, each moved
        by its row offset, make dx. col2im of dz W^T took K*K additions and ran 1.6x as long.
        """
        n, (height, width, channels), k, filters = len(dx), self.shape, self.kernel, self.filters
        p = (k - 1) // 2
        q = k - 1 - p   # dz's left border: a window starting at column X holds dz at X - q .. X - q + K - 1
        dz_pad = self._buffer("dz_pad", n, (height, width + k - 1, filters), zero=True)
        # The windows and their sums in the column buffer, free once the weight gradient is made.
        space = self._buffer("cols", n, (height * width * k * (filters + channels),)).reshape(-1)
        split = n * height * width * k * filters
        windows = space[:split].reshape(n, height, width, k, filters)
        sums = space[split:].reshape(n, height * width, k * channels)
        dx_pad = self._buffer("dx_pad", n, (height + k - 1, width, channels))
        dz_pad[:, :, q:q + width] = dz_flat.reshape(n, height, width, filters)
        np.copyto(windows, sliding_window_view(dz_pad, k, axis=2).transpose(0, 1, 2, 4, 3))
        np.matmul(windows.reshape(n * height * width, -1), by_rows, out=sums.reshape(n * height * width, -1))
        dx_pad.fill(0)
        for i, block in enumerate(sums.reshape(n, height, width, k, channels).transpose(3, 0, 1, 2, 4)):
            dx_pad[:, i:i + height] += block
        dx[...] = dx_pad[:, p:p + height]
