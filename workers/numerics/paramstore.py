"""The store of tied weights every time box shares: an optimizer per group and a version counting its steps."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from workers.numerics.boxmodel import grouped, make_model, model_groups, named
from workers.numerics.optimizers import Scheduled
from workers.numerics.snapshot import copy_into, counter, join, part

if TYPE_CHECKING:
    from protocol.wireconfig import WireConfig


class ParamStore:
    """The tied weights every box shares, an optimizer per group, and a version that counts steps taken.

    Decoupled modes take a step per push, at once: each box's update lands as soon as it is made
    (K steps per batch). Backprop adds the K boxes' gradients of a batch, which is exactly the BPTT
    gradient, and takes one step per batch.
    """

    def __init__(self, cfg: WireConfig):
        self.cell, self.readout = make_model(cfg, 0)
        self.groups = model_groups(cfg, self.cell, self.readout)
        self.opt = Scheduled(self.groups, cfg)
        self.per_step = cfg.boxes if cfg.mode == "backprop" else 1
        self.late_step = cfg.late_step
        self.version = 0
        self.partial: dict[int, dict[int, dict]] = {}
        self._snapshot: tuple[int, dict] | None = None

    def params(self) -> dict[str, np.ndarray]:
        return named(self.groups)

    def push(self, b: int, box: int, grads: dict[str, np.ndarray], delay: int = 0) -> bool:
        """Box `box`'s gradients for batch b, landing `delay` updates after the weights they were computed
        with; True if a step was taken (the version moved)."""
        if self.per_step == 1:
            # --late-step inverse: a gradient d updates late steps at 1/(1+d) of the rate (staleness-aware ASGD).
            self.step(grads, b + 1, 1 / (1 + delay) if self.late_step == "inverse" else 1.0)
            return True
        parts = self.partial.setdefault(b, {})
        parts[box] = grads
        if len(parts) < self.per_step:
            return False
        del self.partial[b]
        total: dict[str, np.ndarray] = {}
        for j in sorted(parts):  # a fixed order: the sum is the same whatever order pushes came in
            for name, g in parts[j].items():
                total[name] = total[name] + g if name in total else g.astype(g.dtype, copy=True)
        self.step(total, b + 1)
        return True

    def step(self, grads: dict[str, np.ndarray], batches_done: int, scale: float = 1.0) -> None:
        """One optimizer step at `scale` times the rate. The rate follows the batches, not the steps: how many
        steps a batch brings depends on the mode and on how many boxes have a loss to push (truncated
        BPTT on a label per sequence: only the last)."""
        self.opt.step(grouped(grads), batches_done, scale)
        self.version += 1

    def snapshot(self) -> dict[str, np.ndarray]:
        """Copies of the weights at this version: they are sent zero-copy, so nothing may write them after."""
        if self._snapshot is None or self._snapshot[0] != self.version:
            self._snapshot = (self.version, {k: v.copy() for k, v in self.params().items()})
        return self._snapshot[1]

    def state(self) -> dict[str, np.ndarray]:
        """The tied weights, their optimizer and the version. Partial sums are not kept: at a
        barrier every batch's pushes are in."""
        return {**self.params(), **join(opt=self.opt.state()), "version": counter(self.version)}

    def load_state(self, saved: dict[str, np.ndarray]) -> None:
        copy_into(self.params(), saved)
        self.opt.load_state(part(saved, "opt"))
        self.version, self._snapshot = int(saved["version"]), None
