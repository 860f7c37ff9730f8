"""PipeDream's 1F1B with weight stashing: the schedule, the op order a stage keeps, the stash, one-process training.

Stage k of K keeps at most K - k + 1 batches in flight (the head: one, its step at once). It
forwards batch b only once the backward of batch b - (K - k + 1) is done, and runs the backward
of batch j only once it has forwarded batch j + (K - k), or once no forward comes before a
barrier (it drains). Whatever order the messages arrive in, each stage then runs its ops in the
order `schedule` gives, so the weight version each batch meets is a pure function of it.
"""
from __future__ import annotations

import numpy as np

from workers.numerics.inflight import Batch
from workers.numerics.stage import HeadStage, Stage, head_step

Ops = list[tuple[str, int]]   # ("F", j) or ("B", j): the forward or backward of the stretch's j-th batch


def limit(index: int, stages: int) -> int:
    """Batches stage `index` (1-based) of `stages` keeps in flight at most."""
    return stages - index + 1


def schedule(stages: int, n: int) -> list[Ops]:
    """Each stage's op order (stage 1 first) for n batches between two barriers: the first
    forwards up to its limit, then one backward and one forward in turn, then the drain."""
    orders = []
    for k in range(1, stages + 1):
        most = limit(k, stages)
        ops = [("F", j) for j in range(min(most, n))]
        for j in range(n):
            ops.append(("B", j))
            if j + most < n:
                ops.append(("F", j + most))
        orders.append(ops)
    return orders


class OneFOneB:
    """The order a hidden stage's worker keeps, whatever order its inputs and gradients come in."""

    def __init__(self, index: int, stages: int):
        self.limit = limit(index, stages)
        self.in_flight = 0
        self.draining = False   # a barrier came: no forward comes before the backwards in flight are done

    def may_forward(self) -> bool:
        return self.in_flight < self.limit

    def may_backward(self) -> bool:
        return self.in_flight > 0 and (self.draining or self.in_flight == self.limit)

    def forwarded(self) -> None:
        self.in_flight += 1
        self.draining = False

    def backwarded(self) -> None:
        self.in_flight -= 1

    def drain(self) -> None:
        self.draining = True


class Stash:
    """The weights each in-flight batch's forward used, one copy per weight version (shared by the
    batches of that version, freed with the last of them), and the activations kept with them.

    keeps_weights False (stage 1): its backward needs no dL/dx, and dL/dW needs only the activations.
    """

    def __init__(self, keeps_weights: bool):
        self.keeps_weights = keeps_weights
        self.versions: dict[int, list] = {}            # version -> [weights (or None), batches using them]
        self.batches: dict[int, tuple[int, int]] = {}  # batch -> (its version, its activations' bytes)
        self.bytes = 0
        self.peak_batches = self.peak_bytes = 0

    def keep(self, b: int, version: int, params: dict[str, np.ndarray], activations: int) -> None:
        if version not in self.versions:
            weights = {k: a.copy() for k, a in params.items()} if self.keeps_weights else None
            self.versions[version] = [weights, 0]
            self.bytes += weights_bytes(weights)
        self.versions[version][1] += 1
        self.batches[b] = (version, activations)
        self.bytes += activations
        self.peak_batches = max(self.peak_batches, len(self.batches))
        self.peak_bytes = max(self.peak_bytes, self.bytes)

    def take(self, b: int) -> tuple[int, dict[str, np.ndarray] | None]:
        """Batch b's weight version and weights, for its backward; they leave the stash."""
        version, activations = self.batches.pop(b)
        entry = self.versions[version]
        entry[1] -= 1
        self.bytes -= activations
        if entry[1] == 0:
            del self.versions[version]
            self.bytes -= weights_bytes(entry[0])
        return version, entry[0]

    def peak(self) -> dict[str, int]:
        """The most it held at once: batches, and bytes of weights and activations."""
        return {"batches": self.peak_batches, "bytes": self.peak_bytes}


def weights_bytes(weights: dict[str, np.ndarray] | None) -> int:
    return sum(a.nbytes for a in weights.values()) if weights else 0


def forward(stage: Stage, stash: Stash, b: int, x: np.ndarray, y: np.ndarray, t_received: float = 0.0) -> np.ndarray:
    """Batch b's forward with the current weights, which are stashed for its backward."""
    version = stage.inflight.updates
    h = stage.forward_and_keep(b, x, y, t_received)
    stash.keep(b, version, stage.layer.params, x.nbytes + h.nbytes)
    return h


def backward(stage: Stage, stash: Stash, b: int, g: np.ndarray) -> tuple[np.ndarray | None, Batch, int]:
    """Batch b's backward with the weights its forward used, the update applied to the current
    ones at once; returns (dL/dx or None for stage 1, b's in-flight entry, the weight version used)."""
    version, weights = stash.take(b)
    dx, batch = stage.update(b, g, weights)
    return dx, batch, version


def train_stretch(net: list, first: int, batches: list[tuple[np.ndarray, np.ndarray]]) -> list[float]:
    """Batches first, first + 1, ... between two barriers, in one process: each stage runs its
    `schedule` ops as their inputs are ready, as its worker does. Returns the losses in order."""
    *hidden, head = net
    order = schedule(len(net), len(batches))
    inputs = [{j: x for j, (x, _) in enumerate(batches)}] + [{} for _ in hidden]   # stage k's: inputs[k - 1]
    grads = [{} for _ in hidden]                                                  # for stage k's output
    stashes = [Stash(keeps_weights=not s.first) for s in hidden]
    losses, done = {}, [0] * len(net)
    while sum(done) < sum(map(len, order)):
        progressed = False
        for i, stage in enumerate(net):
            while done[i] < len(order[i]):
                op, j = order[i][done[i]]
                if op == "F" and j not in inputs[i] or op == "B" and i < len(hidden) and j not in grads[i]:
                    break
                progressed = True
                done[i] += 1
                y = batches[j][1]
                if isinstance(stage, HeadStage):
                    if op == "F":   # the head's forward, loss, backward and update at once
                        losses[j], _, grads[i - 1][j] = head_step(stage, inputs[i].pop(j), y)
                elif op == "F":
                    inputs[i + 1][j] = forward(stage, stashes[i], first + j, inputs[i].pop(j), y)
                else:
                    dx, _, _ = backward(stage, stashes[i], first + j, grads[i].pop(j))
                    if i:
                        grads[i - 1][j] = dx
        if not progressed:
            raise RuntimeError("the 1F1B schedule deadlocked")
    return [losses[j] for j in range(len(batches))]
