"""The batches a stage or time box has sent on and awaits a target for, and its synthesizer M: one owner for both."""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from workers.numerics import optimizers
from workers.numerics.conv_synthesizer import ConvSynthesizer
from workers.numerics.snapshot import copy_into, counter, join, part
from workers.numerics.synthesizers import Synthesizer

if TYPE_CHECKING:
    from protocol.wireconfig import WireConfig


@dataclass(slots=True)
class Batch:
    """What is kept of batch b from its forward pass until its target (or true gradient) arrives."""
    tape: object                # what the update's backward pass needs; dropped once the update is made
    h: np.ndarray               # the output M predicts the gradient for (a time box's: its last state)
    y: np.ndarray
    t_received: float = 0.0     # stamped by the role, only carried here: when b's input came off the socket,
    latency: float = 0.0        # and the seconds from then until b's update was made (the update latency),
    updated_at: float = 0.0     # and when that was, in seconds since the epoch (update rates against time)
    param_staleness: int = 0    # how many updates old the tied weights that made h were
    updates: int = 0            # the owner's update count once b's update was made (or skipped)
    skipped: bool = False       # --p-update drew no update for b
    g_hat: np.ndarray | None = None
    route: object = None        # what the layer's input gradient needs besides h (a conv block's pooling argmax)


class Fit(NamedTuple):
    """M fitted to one target: M's loss, cosine(ĝ, target), and how many updates late the target came."""
    batch: Batch
    synth_loss: float
    cos: float
    staleness: int


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    return float(np.vdot(a, b)) / (na * nb) if na > 0 and nb > 0 else 0.0


def make_synthesizer(cfg: WireConfig, n: int, n_classes: int, rng: np.random.Generator,
                     maps: tuple[int, int, int] | None = None) -> Synthesizer:
    """M for an n-wide h (the flat rows of (H, W, C) maps if `maps`: a conv stage's M convolves them), as the
    run's options say (cdni: conditioned on n_classes labels)."""
    conditioned = n_classes if cfg.mode == "cdni" else 0
    if maps is None:
        return Synthesizer(n, rng, conditioned, cfg.synth_hidden)
    return ConvSynthesizer(maps, rng, conditioned, cfg.synth_hidden)


class InFlight:
    """A bounded cache of in-flight batches, oldest evicted first, and the synthesizer trained on their targets.

    Without a synthesizer (backprop, truncated BPTT, the last time box) a batch is done with
    at its update; with one, when its target arrives and M is fitted to it.
    """

    def __init__(self, cfg: WireConfig, n: int, n_classes: int, rng: np.random.Generator | None,
                 shared: bool = False, keep_tape: bool = False, maps: tuple[int, int, int] | None = None):
        """M predicts dL/dh for an n-wide h, the flat rows of (H, W, C) maps if `maps` (a conv stage's: M
        convolves them); rng None: no synthesizer. cdni conditions M on n_classes labels.

        shared: M is held elsewhere (a time box's --shared-synth, in the parameter service): no optimizer
        here; a fit's gradients wait in `pending` to be sent there. keep_tape: a batch's tape outlives its
        update, until its target comes (a time box's BP(lambda > 0) pushes that target back through it).
        """
        self.synth: Synthesizer | None = None
        self.synth_opt = None
        if rng is not None:
            self.synth = make_synthesizer(cfg, n, n_classes, rng, maps)
            if not shared:
                self.synth_opt = optimizers.make("adam", self.synth.params, cfg.synth_lr)
        self.pending: dict[str, np.ndarray] = {}
        self.keep_tape = keep_tape
        self.batches: OrderedDict[int, Batch] = OrderedDict()
        self.capacity = cfg.cache   # protocol/window.py: in_flight
        self.updates = 0
        self.evicted = 0      # batches whose target never came back in time
        self.held_peak = 0    # the most batches held at once (a stage's memory: coordinator/bench/stagememory.py)

    @property
    def learns(self) -> bool:
        """Whether a batch waits, after its update, for the target M is fitted to."""
        return self.synth is not None

    def __getitem__(self, b: int) -> Batch:
        return self.batches[b]

    def keep(self, b: int, batch: Batch) -> None:
        self.batches[b] = batch
        self.held_peak = max(self.held_peak, min(len(self.batches), self.capacity))
        while len(self.batches) > self.capacity:
            self.batches.popitem(last=False)
            self.evicted += 1

    def predict(self, b: int) -> np.ndarray:
        """ĝ, the synthetic gradient M gives for h_b (cDNI: and y_b), kept to score against b's target."""
        batch = self.batches[b]
        batch.g_hat = self.synth.gradient(batch.h, batch.y if self.synth.conditioned else None)
        return batch.g_hat

    def updated(self, b: int, made: bool = True) -> Batch:
        """Count b's update (made by the owner; or skipped, not made); b is done with here when there is no M to fit."""
        self.updates += made
        batch = self.batches[b]
        if not self.keep_tape:
            batch.tape = None  # no longer needed; free it early
        batch.updates, batch.skipped = self.updates, not made
        if not self.learns:
            del self.batches[b]
        return batch

    def fit(self, b: int, target: np.ndarray) -> Fit | None:
        """Train M on (h_b, target); None if b is no longer cached (evicted, or a late duplicate)."""
        batch = self.batches.pop(b, None)
        if batch is None:
            return None
        y = batch.y if self.synth.conditioned else None
        # M works in normalised per-example units (workers/numerics/synthesizers.py): Adam's steps do
        # not shrink with the gradient, and would bury targets of the mean loss's size (~1e-4 and
        # below) in noise of the size of the rate.
        loss, grads = self.synth.fit_grads(batch.h, y, target)
        optimizers.check_loss(loss, "the synthesizer's loss")
        if self.synth_opt is not None:
            self.synth_opt.step(self.synth.params, grads)
        else:   # shared: summed until the owner sends them to where M is held
            for k, g in grads.items():
                self.pending[k] = self.pending[k] + g if k in self.pending else g
        return Fit(batch, loss, cosine(batch.g_hat, target), self.updates - batch.updates)

    def take_pending(self) -> dict[str, np.ndarray]:
        """A shared M's gradients summed since the last call, to be sent where M is held."""
        out, self.pending = self.pending, {}
        return out

    def state(self) -> dict[str, np.ndarray]:
        """M, its optimizer and its targets' running scale (a shared M: the scale only, M is saved where it is
        held), and the update count (the owner's schedule position); never the batches themselves: a
        checkpoint is taken at a barrier, when none is in flight (nor any pending gradient: see TimeBox)."""
        synth = {}
        if self.synth is not None:
            synth = join(synth_scale=self.synth.scale_state())
            if self.synth_opt is not None:
                synth.update(join(synth=self.synth.params, synth_opt=self.synth_opt.state()))
        return {**synth, "updates": counter(self.updates)}

    def load_state(self, saved: dict[str, np.ndarray]) -> None:
        if self.synth is not None:
            self.synth.load_scale_state(part(saved, "synth_scale"))
            if self.synth_opt is not None:
                copy_into(self.synth.params, part(saved, "synth"))
                self.synth_opt.load_state(part(saved, "synth_opt"))
        self.updates = int(saved["updates"])
