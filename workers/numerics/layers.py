"""Feed-forward layers, each forward next to its backward: a dense ReLU layer, a conv block and the softmax head.

A stage's layer: forward (evaluation), forward_train (h and its route: what the input gradient needs
besides h, kept until the batch leaves), backward (the update's gradients) and input_gradient (BP(lambda)).
"""
import numpy as np

from workers.numerics.conv import Conv2D, map_after
from workers.numerics.pooling import max_pool, max_pool_backward


class Dense:
    """h = relu(x W + b), or affine when relu=False."""

    def __init__(self, n_in: int, n_out: int, rng: np.random.Generator, relu: bool = True, dtype=np.float32):
        scale = np.sqrt(2.0 / n_in) if relu else np.sqrt(1.0 / n_in)  # He / LeCun init
        self.params = {"W": (rng.standard_normal((n_in, n_out)) * scale).astype(dtype),
                       "b": np.zeros(n_out, dtype)}
        self.relu = relu

    def forward(self, x: np.ndarray) -> np.ndarray:
        h = x @ self.params["W"]
        h += self.params["b"]
        if self.relu:
            np.maximum(h, 0, out=h)
        return h

    def forward_train(self, x: np.ndarray) -> tuple[np.ndarray, None]:
        return self.forward(x), None

    def _pre_activation_grad(self, h: np.ndarray, g: np.ndarray) -> np.ndarray:
        """dL/dz given dL/dh: relu'(z) from its output, h > 0 exactly where z > 0."""
        return g * (h > 0) if self.relu else g

    def backward(self, x: np.ndarray, h: np.ndarray, g: np.ndarray, need_dx: bool = True,
                 params: dict[str, np.ndarray] | None = None, route: None = None):
        """Gradients of the parameters and (optionally) of x, given dL/dh; params: the weights that
        made h if they are no longer the current ones (PipeDream's weight stashing). A dense layer has no route."""
        g = self._pre_activation_grad(h, g)
        grads = {"W": x.T @ g, "b": g.sum(axis=0)}
        return grads, (g @ (params or self.params)["W"].T if need_dx else None)

    def input_gradient(self, h: np.ndarray, g: np.ndarray, route: None = None) -> np.ndarray:
        """dL/dx given dL/dh, with the current weights, no parameter gradients."""
        return self._pre_activation_grad(h, g) @ self.params["W"].T


class ConvBlock:
    """h = maxpool(relu(conv(x) + b)), a conv stage's layer; x and h are flat rows of NHWC maps, as the wire
    carries them. Its route is the pooling's argmax (None without pooling).

    Forward and backward go a chunk of examples at a time (the conv's chunks): the map before the
    pooling and its gradient exist a chunk at a time, in one buffer reused across chunks and batches
    (a forward and a backward never run at once), never for the whole batch."""

    def __init__(self, shape: tuple[int, int, int], filters: int, kernel: int, pool: int,
                 rng: np.random.Generator, dtype=np.float32):
        self.conv = Conv2D(shape, filters, kernel, rng, dtype)
        self.params = self.conv.params
        self.pool = pool
        self.out_shape = map_after(shape, filters, pool)
        self._map = np.empty((0, *shape[:2], filters), dtype)

    def _chunk_map(self, n: int) -> np.ndarray:
        """The buffer of n examples' maps before the pooling (z, then dL/dz), grown as chunks need."""
        if len(self._map) < n:
            self._map = np.empty((n, *self._map.shape[1:]), self._map.dtype)
        return self._map[:n]

    def forward_train(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """ReLU after the pooling, on a p*p times smaller map: max and ReLU commute, and a window that only
        ReLU's zero could tie has h = 0, so no gradient goes through its argmax."""
        h = np.empty((len(x), *self.out_shape), self.params["W"].dtype)
        argmax = None if self.pool == 1 else np.empty(h.shape, np.uint8)
        for s, e in self.conv.chunks(len(x)):
            if self.pool == 1:
                self.conv.forward(x[s:e], out=h[s:e])
            else:
                max_pool(self.conv.forward(x[s:e], out=self._chunk_map(e - s)), self.pool, out=(h[s:e], argmax[s:e]))
        np.maximum(h, 0, out=h)
        return h.reshape(len(x), -1), argmax

    def forward(self, x: np.ndarray) -> np.ndarray:
        return self.forward_train(x)[0]

    def _pre_activation_grad(self, h: np.ndarray, g: np.ndarray, route: np.ndarray | None, s: int, e: int
                             ) -> np.ndarray:
        """dL/dz of examples s:e given dL/dh: through the pooling's argmax, then relu' (z > 0 exactly where its
        max h > 0)."""
        g = (g[s:e] * (h[s:e] > 0)).reshape(e - s, *self.out_shape)
        if self.pool == 1:
            return g
        return max_pool_backward(g, route[s:e], self.pool, self._chunk_map(e - s))

    def backward(self, x: np.ndarray, h: np.ndarray, g: np.ndarray, need_dx: bool = True,
                 params: dict[str, np.ndarray] | None = None, route: np.ndarray | None = None):
        """As Dense.backward; route: the argmax forward_train returned with h."""
        grads = {name: np.zeros_like(p) for name, p in self.params.items()}
        dx = np.empty_like(x) if need_dx else None
        for s, e in self.conv.chunks(len(x)):
            part, dx_part = self.conv.backward(x[s:e], self._pre_activation_grad(h, g, route, s, e), need_dx,
                                               (params or self.params)["W"])
            for name in grads:
                grads[name] += part[name]
            if need_dx:
                dx[s:e] = dx_part.reshape(e - s, -1)
        return grads, dx

    def input_gradient(self, h: np.ndarray, g: np.ndarray, route: np.ndarray | None = None) -> np.ndarray:
        """dL/dx given dL/dh, with the current weights, no parameter gradients."""
        dx = np.empty((len(h), int(np.prod(self.conv.shape))), h.dtype)
        for s, e in self.conv.chunks(len(h)):
            dx[s:e] = self.conv.input_gradient(self._pre_activation_grad(h, g, route, s, e)).reshape(e - s, -1)
        return dx


def softmax_xent(logits: np.ndarray, y: np.ndarray, mask: np.ndarray | None = None):
    """Mean cross-entropy, correct count, and dL/dlogits for integer labels y.

    mask (N,), optional, weights each row (0 = not scored, as in the Copy task's read phase);
    the mean and the correct count then run over scored rows only.
    """
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    n = len(y)
    rows = np.arange(n)
    nll = -np.log(np.maximum(p[rows, y], 1e-30))
    hit = logits.argmax(axis=1) == y
    p[rows, y] -= 1
    if mask is None:
        p /= n
        return float(nll.mean()), int(hit.sum()), p
    scored = float(mask.sum())
    weight = (mask / scored if scored > 0 else np.zeros(n)).astype(p.dtype)
    p *= weight[:, None]
    return float(weight @ nll), int((hit & (mask > 0)).sum()), p


class Head:
    """An affine layer with the softmax cross-entropy loss: the feed-forward top stage, and
    every time box's readout."""

    def __init__(self, n_in: int, n_classes: int, rng: np.random.Generator, dtype=np.float32):
        self.layer = Dense(n_in, n_classes, rng, relu=False, dtype=dtype)
        self.params = self.layer.params

    def loss_and_grads(self, x: np.ndarray, y: np.ndarray, mask: np.ndarray | None = None):
        """(loss, correct, parameter grads, dL/dx): the true gradient the head sends down.

        mask (N,), optional: rows to score, as softmax_xent takes it.
        """
        logits = self.layer.forward(x)
        loss, correct, g = softmax_xent(logits, y, mask)
        grads, dx = self.layer.backward(x, logits, g)
        return loss, correct, grads, dx

    def evaluate(self, x: np.ndarray, y: np.ndarray) -> tuple[float, int]:
        """(summed loss, correct count), no update."""
        loss, correct, _ = softmax_xent(self.layer.forward(x), y)
        return loss * len(y), correct
