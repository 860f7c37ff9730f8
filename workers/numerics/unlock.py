"""The complete unlock (--synthetic-inputs): a stage's input synthesizer I(x), and its two halves of a batch.

The order of an unlocked stage's steps is in workers/numerics/unlock_steps.py.

A stage above the first gets each training batch twice: the network's input x and label y,
straight from the coordinator, and its real input, the activation of the stage below. It updates
from the real input, as without the option, unless the coordinator fed x ahead of it (a stage
below stalled: coordinator/control/unlocked.py): then at once, from I(x), waiting for no stage
below. Updating from I(x) whenever x came first cost accuracy for nothing while batches come
through (docs/results.md). When both halves are there, I is fitted to the real input (a
regression, the synthesizers' convention: per-example targets over a running RMS), and the real
output is what goes on, so the stage above fits its own I and the head scores real inputs.
Evaluation never uses I.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING

import numpy as np

from workers.numerics import optimizers
from workers.numerics.snapshot import copy_into, counter, join, part
from workers.numerics.synthesizers import Synthesizer

if TYPE_CHECKING:
    from protocol.wireconfig import WireConfig

STREAM = 0x4953   # a third seed word: I's initialisation is a stream of its own, not the layer's


class InputSynthesizer(Synthesizer):
    """I(x, y): a stage's input predicted from the network's input (and, cdni, the label), in M's form."""

    def input(self, x: np.ndarray, y=None) -> np.ndarray:
        """The synthetic input: sigma * I(x, y), in the units of the real one."""
        out = self.predict(x, y)
        out *= self.sigma
        return out

    def normalised_target(self, target: np.ndarray) -> np.ndarray:
        """The real input, per example already, over sigma (a new array: target may be a wire buffer)."""
        return self.scaled(np.array(target, dtype=self.params["A"].dtype))


class Unlock:
    """A stage's I with its optimizer, and the batches whose one half came: their network input, or their real one."""

    def __init__(self, cfg: WireConfig, index: int, n_in: int):
        rng = np.random.default_rng([cfg.seed, index, STREAM])
        n_classes = cfg.sizes[-1] if cfg.mode == "cdni" else 0
        self.synth = InputSynthesizer(cfg.sizes[0], rng, n_classes, cfg.synth_hidden, n_out=n_in)
        self.opt = optimizers.make("adam", self.synth.params, cfg.synth_lr)
        self.capacity = cfg.cache
        self.again = cfg.ahead_update == "again"   # a batch updated through I updates again from its real input
        self.retaken = 0            # such batches taken again: the rate schedule counts a batch once (`position`)
        self.data: OrderedDict[int, tuple] = OrderedDict()   # b -> (x, y, whether b updated from I)
        self.real: OrderedDict[int, np.ndarray] = OrderedDict()   # b -> real input: updated from it, I not fitted
        self.evicted = 0            # halves whose other half never came in time
        self.synthetic = 0          # updates made from I (the rest from the real input)
        self.loss = float("nan")    # I's last fit, per element (0.5: no better than predicting zero)

    def keep(self, store: OrderedDict, b: int, half) -> None:
        store[b] = half
        while len(store) > self.capacity:
            store.popitem(last=False)
            self.evicted += 1

    def predict(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return self.synth.input(x.astype(np.float32), y if self.synth.conditioned else None)

    def fit(self, x: np.ndarray, y: np.ndarray, real: np.ndarray) -> float:
        """I regressed on b's real input; its loss."""
        loss, grads = self.synth.fit_grads(x.astype(np.float32), y if self.synth.conditioned else None, real)
        self.loss = optimizers.check_loss(loss, "the input synthesizer's loss")
        self.opt.step(self.synth.params, grads)
        return loss

    def on_data(self, b: int, x: np.ndarray, y: np.ndarray, ahead: bool) -> bool:
        """b's network input, fed `ahead` of its real input (a stall below) or with it: whether the stage is to
        update from I now. Not if b's real input came first (the stage updated from it; I is fitted here), nor
        if it is on its way (the stage updates from it when it comes)."""
        real = self.real.pop(b, None)
        if real is not None:
            self.fit(x, y, real)
            return False
        self.keep(self.data, b, (x, y, ahead))
        self.synthetic += ahead
        return ahead

    def on_real(self, b: int, real: np.ndarray) -> bool:
        """b's real input: I fitted to it if b's network input came; whether the stage is to update from it
        (not if it did from I, unless --ahead-update again)."""
        data = self.data.pop(b, None)
        if data is None:
            self.keep(self.real, b, real)
            return True
        x, y, updated = data
        self.fit(x, y, real)
        self.retaken += updated and self.again
        return not updated or self.again

    def position(self, taken: int) -> int:
        """The layers' rate schedule's position after `taken` updates or draws (UpdateDraws.position): less the
        batches taken again, else every stall would move the schedule on by the batches fed ahead through it
        (the rate annealed to 0 that many batches early)."""
        return taken - self.retaken

    def state(self) -> dict[str, np.ndarray]:
        """I, its optimizer and its targets' scale, and (--ahead-update again) the batches taken again; never the
        halves (a checkpoint is taken at a barrier)."""
        retaken = {"isynth_retaken": counter(self.retaken)} if self.again else {}
        return {**join(isynth=self.synth.params, isynth_opt=self.opt.state(), isynth_scale=self.synth.scale_state()),
                **retaken}

    def load_state(self, saved: dict[str, np.ndarray]) -> None:
        copy_into(self.synth.params, part(saved, "isynth"))
        self.opt.load_state(part(saved, "isynth_opt"))
        self.synth.load_scale_state(part(saved, "isynth_scale"))
        if self.again:
            self.retaken = int(saved["isynth_retaken"])
