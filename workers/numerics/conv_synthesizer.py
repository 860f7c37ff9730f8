"""The synthesizer of a conv stage: M(h) or M(h, y) over the whole (H, W, C) map, by convolutions.

The conventions of workers/numerics/synthesizers.py hold unchanged (per-example targets over their
running RMS, h normalised, the readout zero-initialised): only the maps M computes with differ.
"""
from __future__ import annotations

import numpy as np

from workers.numerics.conv import Conv2D
from workers.numerics.synthesizers import Synthesizer, per_class_sum

# M's kernel: 3 x 3, not the stage's 5 x 5. On the default net's first stage (14 x 14 x 32 maps) a 5 x 5
# M costs 8 times the stage's own conv; 3 x 3 still lets each output see its neighbours.
SYNTH_KERNEL = 3


class ConvSynthesizer(Synthesizer):
    """Linear: a same-padded conv of h, with the one-hot label broadcast as extra input maps (cDNI); or with
    `hidden`: a fixed random conv ReLU layer of `hidden` maps under a learned conv readout.

    The label maps are constant over the image, so their part of the conv is, per class, one (H, W, C)
    map: the im2col of a map of ones (zero outside the image) times the label's kernel slice E[c].
    """

    def __init__(self, shape: tuple[int, int, int], rng: np.random.Generator, n_classes: int = 0, hidden: int = 0,
                 dtype=np.float32):
        self.shape, self.conditioned, self.hidden = shape, n_classes > 0, hidden
        self.learned = ("A", "c", "E") if self.conditioned and not hidden else ("A", "c")
        self.mean_square = 0.0
        height, width, channels = shape
        self.readout = Conv2D((height, width, hidden or channels), channels, SYNTH_KERNEL, None, dtype)
        self.params = {"A": self.readout.params["W"], "c": self.readout.params["b"]}
        if hidden:
            self.features = Conv2D(shape, hidden, SYNTH_KERNEL, rng, dtype)
            self.params.update(U=self.features.params["W"], d=self.features.params["b"])
        if self.conditioned:
            ones = Conv2D((height, width, 1), 1, SYNTH_KERNEL, None, dtype)
            self.ones_cols = ones.im2col(np.ones((1, height, width, 1), dtype)).copy()   # (H*W, K*K)
            k2, label_out = SYNTH_KERNEL * SYNTH_KERNEL, hidden or channels
            # As the dense M: a class part of the readout starts at zero; one feeding the hidden layer, small random.
            self.params["E"] = (np.zeros((n_classes, k2, label_out), dtype) if not hidden else
                                (rng.standard_normal((n_classes, k2, label_out)) * 0.1).astype(dtype))

    def _label_maps(self, y) -> np.ndarray:
        """(N, H*W, out) the label maps' part of the conv they enter."""
        return np.einsum("pk,ckf->cpf", self.ones_cols, self.params["E"])[y]

    def _hidden(self, x: np.ndarray, y) -> np.ndarray:
        z = self.features.forward(x).reshape(len(x), -1, self.hidden)
        if self.conditioned:
            z += self._label_maps(y)
        return np.maximum(z, 0, out=z).reshape(len(x), -1)

    def _readout(self, x: np.ndarray, y) -> tuple[np.ndarray, np.ndarray]:
        a = self._hidden(x, y) if self.hidden else x
        g = self.readout.forward(a).reshape(len(x), -1, self.shape[2])
        if self.conditioned and not self.hidden:
            g += self._label_maps(y)
        return g.reshape(len(x), -1), a

    def _readout_grads(self, a: np.ndarray, y, err: np.ndarray) -> dict[str, np.ndarray]:
        grads, _ = self.readout.backward(a, err, need_dx=False)
        out = {"A": grads["W"], "c": grads["b"]}
        if "E" in self.learned:
            per_class = per_class_sum(err.reshape(len(err), -1, self.shape[2]), y, self.params["E"].shape[0])
            out["E"] = np.einsum("pk,cpf->ckf", self.ones_cols, per_class)
        return out
