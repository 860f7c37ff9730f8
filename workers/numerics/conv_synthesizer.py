"""The synthesizer of a conv stage: M(h) or M(h, y) over the whole (H, W, C) map, by convolutions.

The conventions of workers/numerics/synthesizers.py hold unchanged (per-example targets over their
running RMS, h normalised, the readout zero-initialised): only the maps M computes with differ.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from workers.numerics.conv import Conv2D
from workers.numerics.synthesizers import Synthesizer

# M's kernel: 3 x 3, not the stage's 5 x 5. On the default net's first stage (14 x 14 x 32 maps) a 5 x 5
# M costs 8 times the stage's own conv; 3 x 3 still lets each output see its neighbours.
SYNTH_KERNEL = 3


class ConvSynthesizer(Synthesizer):
    """Linear: a same-padded conv of h, plus a map per class (cDNI); or with `hidden`: a fixed random conv
    ReLU layer of `hidden` maps (the class map added to it) under a learned conv readout."""

    def __init__(self, shape: tuple[int, int, int], rng: np.random.Generator, n_classes: int = 0, hidden: int = 0,
                 dtype=np.float32):
        self.shape, self.conditioned, self.hidden = shape, n_classes > 0, hidden
        self.learned = ("A", "c", "E") if self.conditioned and not hidden else ("A", "c")
        self.mean_square = 0.0
        height, width, channels = shape
        # M sees h normalised so that one output's window, not the whole map, has unit norm on average:
        # Adam's step on the kernel then moves an output as much as its step on the bias, as for a dense M.
        self.row_share = float(np.sqrt(SYNTH_KERNEL * SYNTH_KERNEL / (height * width)))
        self.readout = Conv2D((height, width, hidden or channels), channels, SYNTH_KERNEL, None, dtype)
        self.params = {"A": self.readout.params["W"], "c": self.readout.params["b"]}
        if hidden:
            self.features = Conv2D(shape, hidden, SYNTH_KERNEL, rng, dtype)
            self.params.update(U=self.features.params["W"], d=self.features.params["b"])
        if self.conditioned:
            # A class's part is a whole (H, W, out) map, not a conv of the one-hot label broadcast as constant
            # maps: those only vary near the border, and the gradient's class pattern differs at every position
            # (it is the next stage's weights). As the dense M: zero in the readout, small random into the hidden layer.
            label_out = height * width * (hidden or channels)
            self.params["E"] = (np.zeros((n_classes, label_out), dtype) if not hidden else
                                (rng.standard_normal((n_classes, label_out)) * 0.1).astype(dtype))

    def _forward(self, h: np.ndarray, y) -> tuple[np.ndarray, Scaled | np.ndarray]:
        """As Synthesizer._forward, but the normalised input is made a chunk at a time as the convolutions read
        it (Conv2D's scale), never as a copy of the whole batch's maps."""
        return self._readout(Scaled(h, self.input_scale(h)), y)

    def _features(self, x: Scaled) -> np.ndarray:
        return self.features.forward(x.rows, scale=x.scale).reshape(len(x.rows), -1)

    def _linear(self, a: Scaled | np.ndarray) -> np.ndarray:
        a = scaled(a)
        return self.readout.forward(a.rows, scale=a.scale).reshape(len(a.rows), -1)

    def _linear_grads(self, a: Scaled | np.ndarray, err: np.ndarray) -> dict[str, np.ndarray]:
        a = scaled(a)
        grads, _ = self.readout.backward(a.rows, err, need_dx=False, scale=a.scale)
        return {"A": grads["W"], "c": grads["b"]}


class Scaled(NamedTuple):
    """M's normalised input, rows * scale, not yet made (scale None: the rows as they are)."""
    rows: np.ndarray
    scale: np.floating | None


def scaled(a: Scaled | np.ndarray) -> Scaled:
    """The readout's input as Scaled: the normalised input of a linear M, or a hidden layer's output as it is."""
    return a if isinstance(a, Scaled) else Scaled(a, None)
