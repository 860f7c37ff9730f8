"""Softmax cross-entropy output layer that turns hidden states into a loss and its gradient."""

from __future__ import annotations

import numpy as np

from workers.layers import softmax_xent


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
        z = self.logits(h)
        loss, correct, g = softmax_xent(z, y, mask)
        grads = {"W": np.matmul(h.T, g, dtype=self.dtype), "b": g.sum(axis=0)}
        return loss, correct, grads, g @ self.params["W"].T
