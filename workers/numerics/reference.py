"""The whole network in one process, driving the same Stage objects: the transparency reference."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from workers.numerics.stage import HeadStage, build, head_step, train_step

if TYPE_CHECKING:
    from protocol.wireconfig import WireConfig


def build_network(cfg: WireConfig) -> list:
    return [build(i, cfg) for i in range(1, len(cfg.sizes))]


def step(stages: list, b: int, x: np.ndarray, y: np.ndarray) -> float:
    """One training step on batch b, in the order the distributed pipeline does it; returns the loss."""
    *hidden, head = stages
    locked = bool(hidden) and hidden[0].locked
    below = None
    for s in hidden:
        x, target, _ = train_step(s, b, x, y)
        if target is not None:   # (never when locked) stage k's bootstrapped target for stage k-1's M, at once
            below.inflight.fit(b, target)
        below = s
    loss, _, g = head_step(head, x, y)
    if locked:
        for s in reversed(hidden):
            g, _ = s.update(b, g)
    else:
        learn_down(hidden, len(hidden), b, g)
    return loss


def learn_down(hidden: list, k: int, b: int, target: np.ndarray) -> list:
    """Hidden stage k (1-based) takes b's target; with BP(lambda) > 0 each stage then hands its
    target down, as the workers' GRAD messages do. Returns the fits made, stage k's first."""
    fits = []
    while target is not None and k >= 1:
        fit, target = hidden[k - 1].learn(b, target)
        fits.append(fit)
        k -= 1
    return fits


def evaluate(stages: list, x: np.ndarray, y: np.ndarray, batch: int) -> float:
    """Test accuracy, batch by batch as the pipeline evaluates (same float32 arithmetic)."""
    correct = 0
    for i in range(0, len(x), batch):
        h = x[i:i + batch]
        for s in stages[:-1]:
            h = s.forward(h)
        head: HeadStage = stages[-1]
        correct += head.evaluate(h, y[i:i + batch])[1]
    return correct / len(x)
