"""Softmax cross-entropy output layer that turns hidden states into a loss and its gradient."""

from __future__ import annotations

import numpy as np


class Readout:
    """Affine map to class logits followed by softmax cross-entropy, averaged over scored rows."""

    def __init__(self, n_in: int, n_classes: int, rng: np.random.Generator, dtype=np.float32):
        self.n_in, self.n_classes = n_in, n_classes
        self.dtype = np.dtype(dtype)
        self.params = {
            "W": (rng.standard_normal((n_in, n_classes)) / np.sqrt(n_in)).astype(self.dtype),
            "b": np.zeros(n_classes, self.dtype),
        }

    def logits(self, h: np.ndarray) -> np.ndarray:
        z = np.matmul(h, self.params["W"], dtype=self.dtype)
        z += self.params["b"]
        return z

    def predict(self, h: np.ndarray) -> np.ndarray:
        """Most likely class for each row of h (N, n_in)."""
        return self.logits(h).argmax(axis=-1)

    def loss_and_grad(self, h: np.ndarray, y: np.ndarray, mask: np.ndarray | None = None
                      ) -> tuple[float, int, dict[str, np.ndarray], np.ndarray]:
        """Mean cross-entropy of h (N, n_in) against int labels y (N,); returns (loss, correct, grads, d_h).

        mask (N,), optional, weights each row (0 = not scored, as in the Copy task's read phase);
        the mean and the correct count then run over scored rows only.
        """
        n = h.shape[0]
        z = self.logits(h)
        # Softmax in place on the logits buffer; shifting by the row max avoids overflow.
        z -= z.max(axis=1, keepdims=True)
        np.exp(z, out=z)
        z /= z.sum(axis=1, keepdims=True)
        rows = np.arange(n)
        p_true = z[rows, y]
        nll = -np.log(np.maximum(p_true, np.finfo(self.dtype).tiny))
        hit = z.argmax(axis=1) == y
        if mask is None:
            weight = np.full(n, 1.0 / n, self.dtype)
        else:
            scored = float(mask.sum())
            weight = (mask / scored if scored > 0 else np.zeros(n)).astype(self.dtype)
            hit &= mask > 0
        loss = float(weight @ nll)
        # d(loss)/d(logits) = weight * (softmax - onehot), built in the softmax buffer.
        z[rows, y] -= 1.0
        z *= weight[:, None]
        grads = {"W": np.matmul(h.T, z, dtype=self.dtype), "b": z.sum(axis=0)}
        d_h = z @ self.params["W"].T
        return loss, int(hit.sum()), grads, d_h
