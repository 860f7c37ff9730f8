"""Training with each synthesizer's target held back by a few batches: the credit window's staleness in one process."""
from __future__ import annotations

import heapq
import math
import time

import numpy as np

from coordinator.config import Config
from coordinator.data import Dataset, batches
from protocol import window
from protocol.wireconfig import WireConfig
from workers.numerics.reference import build_network, evaluate, step
from workers.numerics.stage import head_step, train_step


def delayed_step(stages: list, b: int, x: np.ndarray, y: np.ndarray, pending: list, delay: int,
                 hop: float = 0.0) -> float:
    """workers.numerics.reference.step, with each synthesizer's target applied `delay` batches late, and `hop`
    batches more for every stage it came down through (BP(lambda > 0) down a pipeline, a stage at a time: stage
    k's target then arrives delay + (K-1-k) * hop batches late). `pending` is a heap the caller keeps."""
    *hidden, head = stages
    if not hidden or hidden[0].locked:
        return step(stages, b, x, y)
    for k, s in enumerate(hidden, 1):
        x, target, _ = train_step(s, b, x, y)
        if target is not None:   # the bootstrap (bp_lambda 0): stage k's target for stage k-1
            heapq.heappush(pending, (b + delay, b, 1 - k, target))
    loss, _, g = head_step(head, x, y)
    heapq.heappush(pending, (b + delay, b, -len(hidden), g))
    # Due first, then by batch, then from the top stage down: each stage fits its targets in batch order.
    while pending and pending[0][0] <= b:
        due, sent, k, t = heapq.heappop(pending)
        s = hidden[-k - 1]
        fit, down = s.learn(sent, t)
        if fit is not None:
            s.cos_sum = getattr(s, "cos_sum", 0.0) + fit.cos
            s.cos_n = getattr(s, "cos_n", 0) + 1
        if down is not None:
            heapq.heappush(pending, (due + hop, sent, k + 1, down))
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
              centre: bool = Config.centre, eval_every: int = 0, target: float = 0.0) -> dict:
    """One configuration, scored on the validation split after each epoch; with eval_every, also every that
    many batches (`curve`), and the samples trained on when it first reached `target` (None: never). spec["hop"]:
    delayed_step's hop (0 if absent)."""
    xt, yt, xv, yv = split(data, val, subset)
    if centre:   # as `dni run` does, with the mean of the examples trained on (not the validation's)
        both = Dataset(xt, yt, xv, yv, data.n_classes, data.name).centred()
        xt, xv = both.x_train, both.x_test
    steps = -(-len(xt) // batch) * epochs
    hop = spec.get("hop", 0.0)
    late = math.ceil(delay + hop * max(spec["stages"] - 2, 0))   # the stalest target: stage 1's
    cfg = WireConfig(sizes=(data.n_features, *[spec["width"]] * (spec["stages"] - 1), data.n_classes),
                     mode=spec["mode"], optimizer=spec["optimizer"], lr=spec["lr"], schedule="cosine",
                     total_steps=steps, synth_lr=spec["synth_lr"], synth_hidden=spec["synth_hidden"],
                     bp_lambda=spec["bp_lambda"], seed=spec["seed"], log_every=1, cache=window.in_flight(late))
    net = build_network(cfg)
    rng = np.random.default_rng(spec["seed"])
    pending: list = []
    b, t0, history, losses, curve = 0, time.perf_counter(), [], [], []
    for _ in range(epochs):
        epoch_loss = []
        for s in net[:-1]:
            s.cos_sum, s.cos_n = 0.0, 0
        for x, y in batches(xt, yt, batch, rng):
            epoch_loss.append(delayed_step(net, b, x, y, pending, delay, hop))
            b += 1
            if b < spec["warmup"]:   # experiment: the layers' rate ramps up linearly over the first batches
                for opt in (o for s in net for o in s.opt.opts.values()):
                    opt.lr *= b / spec["warmup"]   # the rate Scheduled set for the next step
            if eval_every and b % eval_every == 0:
                curve.append([b * batch, evaluate(net, xv, yv, 1000)])
        losses.append(float(np.mean(epoch_loss)))
        history.append(evaluate(net, xv, yv, 1000))
        if not np.isfinite(losses[-1]):
            break
    cos = [round(s.cos_sum / s.cos_n, 3) for s in net[:-1] if getattr(s, "cos_n", 0)]
    reached = next((n for n, acc in curve if acc >= target), None) if target else None
    return {**spec, "val_accuracy": history[-1], "val_history": history, "train_loss": losses,
            "last_epoch_cos": cos, "seconds": round(time.perf_counter() - t0, 1),
            **({"curve": curve, "target": target, "samples_to_target": reached} if eval_every else {})}
