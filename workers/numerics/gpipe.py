"""GPipe's numerics: backprop's stages, whose gradients add up over a batch's micro-batches, one update a batch.

The weights do not change within a batch, so the order of its forwards and backwards does not
matter; the order of the sum does, and is fixed: micro-batch order, everywhere. The workers
and the single-process reference (`train_batch`) drive the same objects, hence bit-equal results.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

from workers.numerics.inflight import Batch
from workers.numerics.layers import softmax_xent
from workers.numerics.microbatch import ids, locate, split
from workers.numerics.optimizers import check_loss
from workers.numerics.stage import HeadStage, Stage


class Accumulator:
    """A batch's parameter gradients, added up in micro-batch order."""

    def __init__(self, m: int):
        self.m, self.sum, self.count = m, None, 0

    def add(self, j: int, grads: dict[str, np.ndarray]) -> bool:
        """Add micro-batch j's gradients (j must come next); True once the batch's last is in."""
        if j != self.count:
            raise ValueError(f"micro-batch {j} out of order: {self.count} comes next")
        if self.sum is None:
            self.sum = grads
        else:
            for k, g in grads.items():
                self.sum[k] += g
        self.count += 1
        return self.count == self.m

    def take(self) -> dict[str, np.ndarray]:
        grads, self.sum, self.count = self.sum, None, 0
        return grads


class GPipeStage:
    """Hidden stage k: each micro-batch's forward keeps it in flight; its backward adds up its gradients;
    the batch's last backward makes the update."""

    def __init__(self, stage: Stage, m: int):
        self.stage, self.m, self.grads = stage, m, Accumulator(m)
        self.opening: Batch | None = None   # the batch's first micro-batch: its update latency starts there

    def forward(self, b: int, x: np.ndarray, y: np.ndarray, t_received: float = 0.0) -> np.ndarray:
        return self.stage.forward_and_keep(b, x, y, t_received)

    def backward(self, b: int, g: np.ndarray) -> tuple[np.ndarray | None, Batch | None]:
        """dL/dx of micro-batch b (None for stage 1), made with the weights its forward used; and, once b
        was its batch's last and the update is made, the batch's first micro-batch entry (else None)."""
        s = self.stage
        batch = s.inflight.batches.pop(b)
        grads, dx = s.layer.backward(batch.tape, batch.h, g, need_dx=not s.first, route=batch.route)
        if self.grads.count == 0:
            self.opening = batch
        if not self.grads.add(locate(b, self.m)[1], grads):
            return dx, None
        s.inflight.updates += 1
        s.opt.step({"layer": self.grads.take()}, s.inflight.updates)
        return dx, self.opening


class GPipeHead:
    """The head: the M forwards (each micro-batch's loss), then the M backwards, each scaled to its share
    of the batch's mean loss; the last one makes the update."""

    def __init__(self, head: HeadStage, m: int):
        self.head, self.m, self.grads = head, m, Accumulator(m)
        self.kept: dict[int, tuple] = {}   # micro-batch id -> (x, logits, dL/dlogits of its own mean loss)

    def forward(self, b: int, x: np.ndarray, y: np.ndarray) -> tuple[float, int, bool]:
        """(micro-batch b's mean loss, its correct count, whether the batch's M forwards are all done)."""
        logits = self.head.head.layer.forward(x)
        loss, correct, g = softmax_xent(logits, y)
        check_loss(loss)   # before any gradient goes down
        self.kept[b] = (x, logits, g)
        return loss, correct, len(self.kept) == self.m

    def backwards(self) -> Iterator[tuple[int, np.ndarray]]:
        """(id, dL/dx) of each micro-batch kept, in order; the update is made before the last is handed out."""
        n = sum(len(x) for x, _, _ in self.kept.values())
        for b in sorted(self.kept):
            x, logits, g = self.kept.pop(b)
            g *= np.float32(len(x) / n)   # the batch's mean loss: each micro-batch weighs its share
            grads, dx = self.head.head.layer.backward(x, logits, g)
            if self.grads.add(locate(b, self.m)[1], grads):
                self.head.update(self.grads.take())
            yield b, dx


def train_batch(stages: list, step: int, x: np.ndarray, y: np.ndarray) -> float:
    """Training batch `step` through the whole network in one process (stages: GPipeStage..., GPipeHead), in
    the order each stage of the pipeline does it; returns the batch's mean loss."""
    *hidden, head = stages
    loss = 0.0
    for b, part in zip(ids(step, head.m), split(len(x), head.m)):
        h = x[part]
        for s in hidden:
            h = s.forward(b, h, y[part])
        loss += head.forward(b, h, y[part])[0] * len(h)
    for b, g in head.backwards():
        for s in reversed(hidden):
            g, _ = s.backward(b, g)
    return loss / len(x)
