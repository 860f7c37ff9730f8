"""Training with each synthesizer's target held back by a few batches: the credit window's staleness in one process."""
from __future__ import annotations

import time
from collections import deque

import numpy as np

from coordinator.config import Config
from coordinator.data import Dataset, batches
from protocol import window
from protocol.wireconfig import WireConfig
from workers.numerics.reference import build_network, evaluate, learn_down, step
from workers.numerics.stage import head_step, train_step


def delayed_step(stages: list, b: int, x: np.ndarray, y: np.ndarray, pending: deque, delay: int) -> float:
    """workers.numerics.reference.step, with each synthesizer's target applied `delay` batches late."""
    *hidden, head = stages
    if not hidden or hidden[0].locked:
        return step(stages, b, x, y)
    for k, s in enumerate(hidden, 1):
        x, target, _ = train_step(s, b, x, y)
        if target is not None:   # the bootstrap (bp_lambda 0): stage k's target for stage k-1
            pending.append((b, k - 1, target))
    loss, _, g = head_step(head, x, y)
    pending.append((b, len(hidden), g))
    while pending and pending[0][0] <= b - delay:
        sent, k, t = pending.popleft()
        for s, fit in zip(reversed(hidden[:k]), learn_down(hidden, k, sent, t)):
            if fit is not None:
                s.cos_sum = getattr(s, "cos_sum", 0.0) + fit.cos
                s.cos_n = getattr(s, "cos_n", 0) + 1
    return loss


def split(data, val: int, subset: int):
    """(x_train, y_train, x_val, y_val): the last `val` training examples are held out."""
    n = len(data.x_train) - val
    if n < 1:
        raise ValueError(f"--val {val}: the training set has only {len(data.x_train)} examples")
    xt, yt = data.x_train[:n], data.y_train[:n]
    if subset:
        xt, yt = xt[:subset], yt[:subset]
    return xt, yt, data.x_train[n:], data.y_train[n:]


def train_one(data, spec: dict, epochs: int, batch: int, delay: int, val: int, subset: int,
              centre: bool = Config.centre) -> dict:
    xt, yt, xv, yv = split(data, val, subset)
    if centre:   # as `dni run` does, with the mean of the examples trained on (not the validation's)
        both = Dataset(xt, yt, xv, yv, data.n_classes, data.name).centred()
        xt, xv = both.x_train, both.x_test
    steps = -(-len(xt) // batch) * epochs
    cfg = WireConfig(sizes=(data.n_features, *[spec["width"]] * (spec["stages"] - 1), data.n_classes),
                     mode=spec["mode"], optimizer=spec["optimizer"], lr=spec["lr"], schedule="cosine",
                     total_steps=steps, synth_lr=spec["synth_lr"], synth_hidden=spec["synth_hidden"],
                     bp_lambda=spec["bp_lambda"], seed=spec["seed"], log_every=1, cache=window.in_flight(delay))
    net = build_network(cfg)
    rng = np.random.default_rng(spec["seed"])
    pending: deque = deque()
    b, t0, history, losses = 0, time.perf_counter(), [], []
    for _ in range(epochs):
        epoch_loss = []
        for s in net[:-1]:
            s.cos_sum, s.cos_n = 0.0, 0
        for x, y in batches(xt, yt, batch, rng):
            epoch_loss.append(delayed_step(net, b, x, y, pending, delay))
            b += 1
            if b < spec["warmup"]:   # experiment: the layers' rate ramps up linearly over the first batches
                for opt in (o for s in net for o in s.opt.opts.values()):
                    opt.lr *= b / spec["warmup"]   # the rate Scheduled set for the next step
        losses.append(float(np.mean(epoch_loss)))
        history.append(evaluate(net, xv, yv, 1000))
        if not np.isfinite(losses[-1]):
            break
    cos = [round(s.cos_sum / s.cos_n, 3) for s in net[:-1] if getattr(s, "cos_n", 0)]
    return {**spec, "val_accuracy": history[-1], "val_history": history, "train_loss": losses,
            "last_epoch_cos": cos, "seconds": round(time.perf_counter() - t0, 1)}
