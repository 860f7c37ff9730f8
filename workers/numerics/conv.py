"""Same-padded 2-D convolution of NHWC maps: im2col by stride tricks and one GEMM, its backward beside it.

NHWC, not NCHW: the GEMM cols (N*H*W, K*K*C) @ W (K*K*C, F) writes (N*H*W, F), which is already the
next stage's NHWC map, and a flat image row of the wire is NHWC as it is; NCHW would cost a transpose
of every output and of every incoming gradient.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

# The im2col buffer's size at most: a larger batch (an evaluation batch) is convolved in chunks
# of examples. 96 MiB holds a training batch of 128 of the default net's second stage in one GEMM.
MAX_COLS_BYTES = 96 * 2**20


def map_after(shape: tuple[int, int, int], filters: int, pool: int) -> tuple[int, int, int]:
    """The (height, width, channels) a conv stage with `filters` and pool x pool max pooling makes of `shape`."""
    height, width, _ = shape
    return height // pool, width // pool, filters


def stage_filters(conv: str) -> list[int]:
    """The filter counts of the --conv option's value (checked by the coordinator), one per conv stage."""
    return [int(v) for v in conv.split(",") if v.strip()]


def stage_maps(image: tuple[int, ...], filters: list[int], pool: int) -> list[tuple[int, int, int]]:
    """The maps into each conv stage, then out of the last one: the input image first."""
    maps = [tuple(image)]
    for f in filters:
        maps.append(map_after(maps[-1], f, pool))
    return maps


class Conv2D:
    """z = conv(x, W) + b over same-padded K x K windows; x (N, H, W, C), z (N, H, W, F), float32.

    W is kept as the GEMM's (K*K*C, F) matrix, rows in (ky, kx, c) order. The padded input and the
    columns are buffers reused across batches; the columns of the last forward serve its backward.
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
        self.chunk = max(1, MAX_COLS_BYTES // (height * width * fan_in * np.dtype(dtype).itemsize))
        self._pad = np.zeros((0, height + kernel - 1, width + kernel - 1, channels), dtype)
        self._cols = np.empty((0, height, width, kernel, kernel, channels), dtype)
        self._dpad = np.zeros((0, *self._pad.shape[1:]), dtype)
        self._cols_of: np.ndarray | None = None   # the input whose columns the buffer holds whole

    def _buffers(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The padded-input and column buffers for n examples, grown (never shrunk) as batches need."""
        if len(self._pad) < n:
            self._pad = np.zeros((n, *self._pad.shape[1:]), self._pad.dtype)   # the border stays zero
            self._cols = np.empty((n, *self._cols.shape[1:]), self._cols.dtype)
            self._dpad = np.empty_like(self._pad)
            self._cols_of = None
        return self._pad[:n], self._cols[:n]

    def im2col(self, x: np.ndarray) -> np.ndarray:
        """The (n*H*W, K*K*C) columns of x (n examples), in the reused buffer."""
        n, (height, width, _), p = len(x), self.shape, (self.kernel - 1) // 2
        pad, cols = self._buffers(n)
        pad[:, p:p + height, p:p + width] = x
        windows = sliding_window_view(pad, (self.kernel, self.kernel), axis=(1, 2))   # (n, H, W, C, K, K)
        np.copyto(cols, windows.transpose(0, 1, 2, 4, 5, 3))
        return cols.reshape(n * height * width, -1)

    def _chunks(self, n: int):
        return ((s, min(s + self.chunk, n)) for s in range(0, n, self.chunk))

    def forward(self, x: np.ndarray) -> np.ndarray:
        """z (N, H, W, F), a new array; x (N, H, W, C), or its flat rows (N, H*W*C)."""
        n, rows = len(x), self.shape[0] * self.shape[1]
        maps = x.reshape(n, *self.shape)
        z = np.empty((n, *self.shape[:2], self.filters), self.params["W"].dtype)
        flat = z.reshape(-1, self.filters)
        for s, e in self._chunks(n):
            np.matmul(self.im2col(maps[s:e]), self.params["W"], out=flat[s * rows:e * rows])
        self._cols_of = x if n <= self.chunk else None
        z += self.params["b"]
        return z

    def backward(self, x: np.ndarray, dz: np.ndarray, need_dx: bool = True, weights: np.ndarray | None = None
                 ) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
        """({W, b} gradients, dL/dx (N, H, W, C) or None) given dL/dz; weights: the W that made z if it has
        changed since. The columns are x's own if x is the array the last forward took, else made again."""
        n, rows = len(x), self.shape[0] * self.shape[1]
        maps = x.reshape(n, *self.shape)
        dz_flat = dz.reshape(-1, self.filters)
        grads = {"W": np.zeros_like(self.params["W"]), "b": dz_flat.sum(axis=0)}
        for s, e in self._chunks(n):
            cols = self._cols[:n].reshape(n * rows, -1) if self._cols_of is x else self.im2col(maps[s:e])
            grads["W"] += cols.T @ dz_flat[s * rows:e * rows]
        return grads, (self.input_gradient(dz, weights) if need_dx else None)

    def input_gradient(self, dz: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        """dL/dx (N, H, W, C) given dL/dz: the columns' gradient dz W^T, put back by col2im.

        The columns' gradient is made offset by offset, (K*K, N*H*W, C) in the column buffer: each of
        col2im's K*K additions then runs over whole rows of the map, not over C floats at a time.
        """
        n, rows = len(dz), self.shape[0] * self.shape[1]
        w = self.params["W"] if weights is None else weights
        per_offset = w.reshape(self.kernel * self.kernel, self.shape[2], self.filters).transpose(0, 2, 1)
        dz_flat = dz.reshape(-1, self.filters)
        dx = np.empty((n, *self.shape), w.dtype)
        for s, e in self._chunks(n):
            _, buffer = self._buffers(e - s)
            dcols = buffer.reshape(self.kernel * self.kernel, (e - s) * rows, self.shape[2])
            np.matmul(dz_flat[s * rows:e * rows], per_offset, out=dcols)
            self._cols_of = None
            self._col2im(dcols, dx[s:e])
        return dx

    def _col2im(self, dcols: np.ndarray, dx: np.ndarray) -> None:
        """dx = the sum, over the K x K offsets, of each offset's gradient put back where im2col took it."""
        n, (height, width, channels), k = len(dx), self.shape, self.kernel
        p = (k - 1) // 2
        dpad = self._dpad[:n]
        dpad.fill(0)
        for offset, block in enumerate(dcols):
            i, j = divmod(offset, k)
            dpad[:, i:i + height, j:j + width] += block.reshape(n, height, width, channels)
        dx[...] = dpad[:, p:p + height, p:p + width]
