"""A feed-forward stage's numerics: its layer, synthesizer, optimizers and cache of in-flight batches.

No sockets here: the worker loop and the single-process reference drive the same object,
so the distributed run and the reference do the very same arithmetic.
"""
from __future__ import annotations

from collections import OrderedDict
import time
from dataclasses import dataclass

import numpy as np

from workers import optimizers
from workers.optimizers import scheduled_lr
from workers.layers import Dense, Head
from workers.synthesizers import Synthesizer

MODES = ("dni", "cdni", "backprop")


@dataclass
class InFlight:
    """What a stage keeps of batch b until its bootstrapped target (or true gradient) arrives."""
    x: np.ndarray | None
    h: np.ndarray
    y: np.ndarray
    updates: int                 # the stage's update count when b was sent on
    t_received: float            # perf_counter() when b's input was taken off the socket
    g_hat: np.ndarray | None = None
    latency: float = 0.0         # seconds from t_received to b's update applied


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    return float(np.vdot(a, b)) / (na * nb) if na > 0 and nb > 0 else 0.0


class Stage:
    """Hidden stage k: h = relu(x W + b), updated from M(h) (dni/cdni) or the true gradient (backprop)."""

    def __init__(self, index: int, n_in: int, n_out: int, cfg: dict):
        rng = np.random.default_rng([cfg["seed"], index])  # same init in every process layout
        self.index, self.mode = index, cfg["mode"]
        self.first = index == 1  # stage 1's input is data: no gradient to send for it
        self.layer = Dense(n_in, n_out, rng)
        self.opt = optimizers.make(cfg["optimizer"], self.layer.params, cfg["lr"])
        self.cfg_lr, self.schedule, self.total_steps = cfg["lr"], cfg["schedule"], cfg["total_steps"]
        self.synth = None
        if self.mode != "backprop":
            n_classes = cfg["sizes"][-1] if self.mode == "cdni" else 0
            self.synth = Synthesizer(n_out, rng, n_classes, cfg["synth_hidden"])
            self.synth_opt = optimizers.make("adam", self.synth.params, cfg["synth_lr"])
        self.cache: OrderedDict[int, InFlight] = OrderedDict()
        self.capacity = cfg["cache"]
        self.updates = 0
        self.evicted = 0      # batches whose target never came back in time

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Evaluation: forward only, nothing cached, no update."""
        return self.layer.forward(x)

    def forward_train(self, b: int, x: np.ndarray, y: np.ndarray, t_received: float) -> np.ndarray:
        h = self.layer.forward(x)
        self.cache[b] = InFlight(x, h, y, self.updates, t_received)
        while len(self.cache) > self.capacity:
            self.cache.popitem(last=False)
            self.evicted += 1
        return h

    def synthetic_gradient(self, b: int) -> np.ndarray:
        item = self.cache[b]
        item.g_hat = self.synth.predict(item.h, item.y)
        return item.g_hat

    def apply(self, b: int, g: np.ndarray) -> tuple[np.ndarray | None, dict | None]:
        """Update from dL/dh = g for batch b; returns dL/dx for the stage below (None for stage 1),
        and b's metrics record when b is finished with (backprop; in dni, learn returns it).

        dL/dx is computed with the weights that made h, before they change.
        """
        item = self.cache[b]
        grads, dx = self.layer.backward(item.x, item.h, g, need_dx=not self.first)
        self.opt.step(self.layer.params, grads)
        self.updates += 1
        self.opt.lr = scheduled_lr(self.cfg_lr, self.schedule, self.updates, self.total_steps)
        item.x = None  # no longer needed; free it early
        item.updates = self.updates
        item.latency = time.perf_counter() - item.t_received
        if self.synth is None:
            del self.cache[b]
            return dx, {"step": b, "latency_ms": item.latency * 1e3}
        return dx, None

    def learn(self, b: int, target: np.ndarray) -> dict | None:
        """Train the synthesizer on (h_b, target); None if b is no longer cached (a late duplicate)."""
        item = self.cache.pop(b, None)
        if item is None:
            return None
        loss, grads = self.synth.loss_and_grads(item.h, item.y, target)
        self.synth_opt.step(self.synth.params, grads)
        return {"step": b, "latency_ms": item.latency * 1e3, "synth_loss": loss,
                "cos": cosine(item.g_hat, target), "staleness": self.updates - item.updates}

    def state(self) -> dict[str, np.ndarray]:
        out = {f"layer.{k}": v for k, v in self.layer.params.items()}
        if self.synth is not None:
            out.update({f"synth.{k}": v for k, v in self.synth.params.items()})
        return out


class HeadStage:
    """The top stage: owns the loss, updates from the true gradient, sends dL/dx down."""

    def __init__(self, index: int, n_in: int, n_classes: int, cfg: dict):
        rng = np.random.default_rng([cfg["seed"], index])
        self.index = index
        self.head = Head(n_in, n_classes, rng)
        self.opt = optimizers.make(cfg["optimizer"], self.head.params, cfg["lr"])
        self.cfg_lr, self.schedule, self.total_steps = cfg["lr"], cfg["schedule"], cfg["total_steps"]
        self.updates = 0

    def loss_and_grads(self, x: np.ndarray, y: np.ndarray):
        """(loss, correct, grads, dL/dx); the caller sends dL/dx down before calling update."""
        return self.head.loss_and_grads(x, y)

    def update(self, grads: dict[str, np.ndarray]) -> None:
        self.opt.step(self.head.params, grads)
        self.updates += 1
        self.opt.lr = scheduled_lr(self.cfg_lr, self.schedule, self.updates, self.total_steps)

    def evaluate(self, x: np.ndarray, y: np.ndarray) -> tuple[float, int]:
        return self.head.evaluate(x, y)

    def state(self) -> dict[str, np.ndarray]:
        return {f"layer.{k}": v for k, v in self.head.params.items()}


def build(index: int, cfg: dict) -> Stage | HeadStage:
    """Stage `index` (1-based) of the network whose layer sizes are cfg['sizes'] (input ... classes)."""
    sizes = cfg["sizes"]
    n_stages = len(sizes) - 1
    if index == n_stages:
        return HeadStage(index, sizes[-2], sizes[-1], cfg)
    return Stage(index, sizes[index - 1], sizes[index], cfg)


def load_state(stage: Stage | HeadStage, arrays: dict[str, np.ndarray]) -> None:
    """Copy checkpointed arrays into a stage, checking names and shapes."""
    own = stage.state()
    if set(own) != set(arrays):
        raise ValueError(f"stage {stage.index}: checkpoint holds {sorted(arrays)}, expected {sorted(own)}")
    for k, a in own.items():
        if a.shape != arrays[k].shape:
            raise ValueError(f"stage {stage.index}: {k} has shape {arrays[k].shape}, expected {a.shape}")
        a[...] = arrays[k]

