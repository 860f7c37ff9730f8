"""Synthetic-gradient models M(h) and, conditioned on the label (cDNI), M(h, y)."""
import numpy as np


class Synthesizer:
    """Predicts dL/dh from h (and y): linear, or one ReLU hidden layer; output zero-initialised.

    The zero output layer makes training start as if the gradient were 0, as in the paper.
    The label enters as a learned per-class bias, which equals a linear map of onehot(y)
    concatenated to h, without building the one-hot matrix.
    """

    def __init__(self, n: int, rng: np.random.Generator, n_classes: int = 0, hidden: int = 0, dtype=np.float32):
        self.conditioned, self.hidden = n_classes > 0, hidden
        n_last = hidden or n
        self.params = {"A": np.zeros((n_last, n), dtype), "c": np.zeros(n, dtype)}
        if hidden:
            self.params["U"] = (rng.standard_normal((n, hidden)) * np.sqrt(2.0 / n)).astype(dtype)
            self.params["d"] = np.zeros(hidden, dtype)
        if self.conditioned:
            # Linear: the class bias is part of the output, so it starts at zero like A.
            # MLP: it feeds the hidden layer, where a small random start breaks symmetry.
            self.params["E"] = (np.zeros((n_classes, n), dtype) if not hidden else
                                (rng.standard_normal((n_classes, hidden)) * 0.1).astype(dtype))

    def _hidden(self, h: np.ndarray, y) -> np.ndarray:
        z = h @ self.params["U"]
        z += self.params["d"]
        if self.conditioned:
            z += self.params["E"][y]
        return np.maximum(z, 0, out=z)

    def _forward(self, h: np.ndarray, y) -> tuple[np.ndarray, np.ndarray]:
        a = self._hidden(h, y) if self.hidden else h
        g = a @ self.params["A"]
        g += self.params["c"]
        if self.conditioned and not self.hidden:
            g += self.params["E"][y]
        return g, a

    def predict(self, h: np.ndarray, y=None) -> np.ndarray:
        return self._forward(h, y)[0]

    def loss_and_grads(self, h: np.ndarray, y, target: np.ndarray):
        """Regression of M(h, y) onto the bootstrapped target: 0.5 * mean_rows ||M - target||^2."""
        g, a = self._forward(h, y)
        err = g - target
        n = len(h)
        loss = 0.5 * float(np.einsum("ij,ij->", err, err)) / n
        err /= n
        grads = {"A": a.T @ err, "c": err.sum(axis=0)}
        if self.conditioned and not self.hidden:
            grads["E"] = _per_class_sum(err, y, self.params["E"].shape[0])
        if self.hidden:
            da = err @ self.params["A"].T
            da *= a > 0
            grads["U"], grads["d"] = h.T @ da, da.sum(axis=0)
            if self.conditioned:
                grads["E"] = _per_class_sum(da, y, self.params["E"].shape[0])
        return loss, grads


def _per_class_sum(rows: np.ndarray, y: np.ndarray, n_classes: int) -> np.ndarray:
    out = np.zeros((n_classes, rows.shape[1]), rows.dtype)
    np.add.at(out, y, rows)
    return out
