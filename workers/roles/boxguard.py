"""What a time box admits: the coordinator's slices, box states, the service's weights, targets from the next box."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from protocol import Message
from workers.numerics.sequence_tasks import PER_STEP_TASKS
from workers.numerics.timebox import TimeBox
from workers.roles.guard import FLOAT, NOT_IN_FLIGHT, grad_fault, labels_fault, values_fault
from workers.roles.params import weights_fault

if TYPE_CHECKING:
    from protocol.wireconfig import WireConfig


class BoxGuard:
    """The checks of a time box's data kinds, each a reason to drop a message, or None."""

    def __init__(self, cfg: WireConfig, box: TimeBox):
        self.cfg, self.box = cfg, box

    def input_fault(self, msg: Message) -> str | None:
        """The coordinator's slice (x; box 1 also y), or box j-1's state (h, y, stats)."""
        a, c = msg.arrays, self.cfg
        if msg.src == "coordinator":
            x = a.get("x")
            if x is None or "h" in a or ("y" in a) != self.box.first:
                return "arrays not those of a slice"
            # The schema lets a batch's x be rank 2 (a stage's input): a slice is (steps, sequences, n_in).
            if x.dtype != FLOAT or x.ndim != 3 or x.shape[0] not in (1, c.steps_per_box) or x.shape[2] != c.n_in \
                    or not x.shape[1]:
                return "input of the wrong shape or dtype"
            return (self.labels_fault(a["y"], x.shape[1]) if "y" in a else None) or values_fault(x)
        h = a.get("h")
        if h is None or h.dtype != FLOAT or h.shape[1:] != (self.box.cell.state_size,) or not len(h) \
                or a["stats"].shape != (3,):
            return "state of the wrong shape or dtype"
        return self.labels_fault(a["y"], len(h)) or values_fault(h, a["stats"]) or self.stats_fault(a["stats"], len(h))

    def labels_fault(self, y: np.ndarray, n: int) -> str | None:
        """One label per sequence; Copy and Repeat Copy's, one per step of the whole sequence, -1 where none is
        scored."""
        c = self.cfg
        copy = c.task in PER_STEP_TASKS
        if y.shape[1:] != ((c.boxes * c.steps_per_box,) if copy else ()):
            return "labels of the wrong shape"
        return labels_fault(y, n, c.n_classes, -1 if copy else 0)

    def stats_fault(self, stats: np.ndarray, n: int) -> str | None:
        """The running (loss sum, correct, scored) of n sequences: counts no larger than their outputs so far."""
        loss_sum, correct, scored = stats
        if loss_sum < 0 or not 0 <= correct <= scored <= n * self.cfg.boxes * self.cfg.steps_per_box:
            return "running stats out of range"
        return None

    def params_fault(self, msg: Message) -> str | None:
        """An answer's weights: the whole tied set, of its shapes, no older than the copy held."""
        if msg.arrays and msg.arrays.keys() != self.box.params().keys():
            return "weights of the wrong name, shape or dtype"
        if msg.arrays and msg.meta["version"] < self.box.version:
            return "weights older than the copy held"
        return weights_fault(msg, self.box.params())

    def target_fault(self, msg: Message) -> str | None:
        """A target for a state in flight; with --aux, maybe the next box's synthetic gradient of it as well."""
        ahead = msg.arrays.get("a")
        if ahead is not None and self.box.aux is None:
            return "a synthetic gradient to predict, and no --aux"
        batch = self.box.inflight.batches.get(msg.id)
        if batch is None:
            return NOT_IN_FLIGHT
        return grad_fault(msg.arrays["g"], batch.h) or (None if ahead is None else grad_fault(ahead, batch.h))
