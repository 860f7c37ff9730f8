"""DNI + Aux (Jaderberg et al. 2016): a time box's core also predicts the synthetic gradient a box further ahead.

Box j's head P reads its last state h_j (normalised as a synthesizer's input) and predicts the synthetic
gradient box j+1 seeded its BPTT with, sent back with box j's target (zero after the last synthesizer:
the sequence ends). The regression's gradient goes into P and, through h_j, into the core, which so
learns to carry what the future's gradient will depend on. The target comes after box j's update: its
gradients join the box's next update.
"""
from __future__ import annotations

import numpy as np

AUX = "aux"   # the group P's parameters travel and are saved under


class AuxHead:
    """P: a linear map of the normalised state, zero-initialised (so the task starts as plain DNI)."""

    def __init__(self, n: int, dtype=np.float32):
        self.params = {"A": np.zeros((n, n), dtype), "c": np.zeros(n, dtype)}

    def loss_and_grads(self, h: np.ndarray, target: np.ndarray, scale: float):
        """(loss per element, P's grads, dL/dh) of 0.5 * mean_rows ||P(h) - target||^2, the target in the
        predicting box's normalised per-example units; dL/dh is scaled by `scale`, so that it reaches the
        core at the size of the synthetic gradient (the normaliser is held constant, as a synthesizer's)."""
        n = len(h)
        rms_row = max(float(np.sqrt(np.einsum("ij,ij->", h, h, dtype=np.float64) / n)), 1e-12)
        x = h * h.dtype.type(1.0 / rms_row)
        err = x @ self.params["A"]
        err += self.params["c"]
        err -= target
        loss = 0.5 * float(np.einsum("ij,ij->", err, err)) / n / h.shape[1]
        err /= n
        grads = {"A": x.T @ err, "c": err.sum(axis=0)}
        d_h = err @ self.params["A"].T
        d_h *= h.dtype.type(scale / rms_row)
        return loss, grads, d_h
