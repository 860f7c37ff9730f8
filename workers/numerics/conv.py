"""Same-padded 2-D convolution of NHWC maps: im2col by stride tricks and GEMMs, a chunk of examples at a time.

NHWC, not NCHW: the GEMM cols (N*H*W, K*K*C) @ W (K*K*C, F) writes (N*H*W, F), which is already the
next stage's NHWC map, and a flat row of the wire is NHWC as it is; NCHW would cost a transpose
of every output and of every incoming gradient.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

# A batch is convolved a chunk of examples at a time, so a stage's memory does not grow with its batch (the
# default net's second stage kept 80 MiB of columns for a batch of 128). A chunk's columns take COLS_BYTES at
# most, unless that leaves its GEMMs fewer than GEMM_ROWS rows: the default net's second stage (196 rows an
# example) ran 20% slower in chunks of 1 or 2 examples than of 6, while its first stage ran as fast in chunks
# of 13 as of 53 and holds 9 MiB less (its columns, its map before the pooling, its synthesizer's columns).
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
    columns and the padded input gradient are buffers of `chunk` examples, reused across batches.
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
        self._pad = np.zeros((0, height + kernel - 1, width + kernel - 1, channels), dtype)
        self._cols = np.empty((0, height * width, fan_in), dtype)
        self._dpad = np.empty_like(self._pad)

    def _buffers(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The padded-input, column and padded-gradient buffers for a chunk of n examples, grown (never
        shrunk) as chunks need."""
        if len(self._pad) < n:
            self._pad = np.zeros((n, *self._pad.shape[1:]), self._pad.dtype)   # the border stays zero
            self._cols = np.empty((n, *self._cols.shape[1:]), self._cols.dtype)
            self._dpad = np.empty_like(self._pad)
        return self._pad[:n], self._cols[:n], self._dpad[:n]

    def chunks(self, n: int):
        """(start, end) of each chunk of n examples, in order."""
        return ((s, min(s + self.chunk, n)) for s in range(0, n, self.chunk))

    def im2col(self, x: np.ndarray) -> np.ndarray:
        """The (n*H*W, K*K*C) columns of x (n <= chunk examples), in the reused buffer."""
        n, (height, width, _), k = len(x), self.shape, self.kernel
        p = (k - 1) // 2
        pad, cols, _ = self._buffers(n)
        pad[:, p:p + height, p:p + width] = x
        windows = sliding_window_view(pad, (k, k), axis=(1, 2))   # (n, H, W, C, K, K)
        np.copyto(cols.reshape(n, height, width, k, k, -1), windows.transpose(0, 1, 2, 4, 5, 3))
        return cols.reshape(n * height * width, -1)

    def forward(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """z (N, H, W, F), written into `out` if given (contiguous), else a new array; x (N, H, W, C), or its
        flat rows (N, H*W*C)."""
        n, rows = len(x), self.shape[0] * self.shape[1]
        maps = x.reshape(n, *self.shape)
        z = np.empty((n, *self.shape[:2], self.filters), self.params["W"].dtype) if out is None else out
        flat = z.reshape(-1, self.filters)
        for s, e in self.chunks(n):
            out = flat[s * rows:e * rows]
            np.matmul(self.im2col(maps[s:e]), self.params["W"], out=out)
            out += self.params["b"]   # while the chunk's output is in cache
        return z

    def backward(self, x: np.ndarray, dz: np.ndarray, need_dx: bool = True, weights: np.ndarray | None = None
                 ) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
        """({W, b} gradients, dL/dx (N, H, W, C) or None) given dL/dz; weights: the W that made z if it has
        changed since. Each chunk's columns are made again, then serve its input gradient's buffer."""
        n, rows = len(x), self.shape[0] * self.shape[1]
        maps = x.reshape(n, *self.shape)
        dz_flat = dz.reshape(-1, self.filters)
        w = self.params["W"]
        # The bias gradient as a GEMV: numpy's sum over axis 0 runs F floats at a time, 4x slower.
        grads = {"W": np.zeros_like(w), "b": np.ones(len(dz_flat), w.dtype) @ dz_flat}
        part = np.empty_like(w)
        dx = np.empty((n, *self.shape), w.dtype) if need_dx else None
        for s, e in self.chunks(n):
            np.matmul(self.im2col(maps[s:e]).T, dz_flat[s * rows:e * rows], out=part)
            grads["W"] += part
            if need_dx:
                self._input_gradient(dz_flat[s * rows:e * rows], w if weights is None else weights, dx[s:e])
        return grads, dx

    def input_gradient(self, dz: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        """dL/dx (N, H, W, C) given dL/dz, with the current weights (or `weights`), no parameter gradients."""
        w = self.params["W"] if weights is None else weights
        dz_flat = dz.reshape(-1, self.filters)
        dx = np.empty((len(dz), *self.shape), w.dtype)
        rows = self.shape[0] * self.shape[1]
        for s, e in self.chunks(len(dz)):
            self._input_gradient(dz_flat[s * rows:e * rows], w, dx[s:e])
        return dx

    def _input_gradient(self, dz_flat: np.ndarray, w: np.ndarray, dx: np.ndarray) -> None:
        """dx (a chunk) given its dL/dz rows: the columns' gradient dz W^T, put back by col2im.

        The columns' gradient is made offset by offset, (K*K, n*H*W, C) in the column buffer: each of
        col2im's K*K additions then runs over whole rows of the map, not over C floats at a time.
        """
        n, (height, width, channels), k = len(dx), self.shape, self.kernel
        p = (k - 1) // 2
        _, cols, dpad = self._buffers(n)
        dcols = cols.reshape(k * k, n * height * width, channels)
        np.matmul(dz_flat, w.reshape(k * k, channels, self.filters).transpose(0, 2, 1), out=dcols)
        dpad.fill(0)
        for offset, block in enumerate(dcols):
            i, j = divmod(offset, k)
            dpad[:, i:i + height, j:j + width] += block.reshape(n, height, width, channels)
        dx[...] = dpad[:, p:p + height, p:p + width]
