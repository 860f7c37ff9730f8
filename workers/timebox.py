"""A time box's numerics (cell, readout, synthesizer, in-flight batches) and the store of tied weights.

No sockets here: the worker roles and the single-process reference (workers/rnn_reference.py)
drive the same objects, so a distributed run and the reference do the very same arithmetic.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
import time

import numpy as np

from workers import optimizers
from workers.cells import LSTMCell, TanhCell
from workers.layers import Head
from workers.optimizers import scheduled_lr
from workers.stage import cosine
from workers.synthesizers import Synthesizer

MODES = ("dni", "cdni", "truncated", "backprop")
CELLS = {"tanh": TanhCell, "lstm": LSTMCell}


def make_model(cfg: dict, index: int) -> tuple:
    """The cell and readout box `index` starts from; index 0 is the tied set every box shares."""
    rng = np.random.default_rng([cfg["seed"], index])
    cell = CELLS[cfg["cell"]](cfg["n_in"], cfg["units"], rng)
    return cell, Head(cfg["units"], cfg["n_classes"], rng)


def groups(cell, readout) -> dict[str, dict[str, np.ndarray]]:
    """The two parameter groups, by the prefix their arrays travel under."""
    return {"cell": cell.params, "readout": readout.params}


def named(by_group: dict[str, dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Groups of arrays under one namespace ("cell.Wx", "readout.W", ...), as on the wire."""
    return {f"{group}.{k}": v for group, arrays in by_group.items() for k, v in arrays.items()}


def flat(cell, readout) -> dict[str, np.ndarray]:
    """Both parameter groups' arrays by their wire names."""
    return named(groups(cell, readout))


def step_groups(opts: dict, params: dict[str, dict[str, np.ndarray]], grads: dict[str, np.ndarray],
                lr: float) -> None:
    """Each group's optimizer steps on its share of the wire-named grads (if any), then takes rate lr."""
    for group, opt in opts.items():
        mine = {k.split(".", 1)[1]: g for k, g in grads.items() if k.startswith(group + ".")}
        if mine:
            opt.step(params[group], mine)
        opt.lr = lr


def score(cell, readout, states: np.ndarray, y: np.ndarray, first_step: int, last: bool):
    """This stretch of states' share of the sequence's mean loss, or None if it scores nothing.

    states (T, B, S) are steps first_step .. first_step+T-1 of the sequence. y is either one
    label per sequence (B,), scored on the final state (so only where `last`), or a label per
    step (B, steps) with -1 where nothing is scored (the Copy task). Each box weighs its loss by
    its share of the sequence's scored outputs, so the boxes' losses add up to the sequence's
    mean and their gradients to its gradient.
    Returns ((loss_sum, correct, n), readout grads, dL/dstates).
    """
    T, B, _ = states.shape
    if y.ndim == 1:
        if not last:
            return None
        h, labels, mask, share = cell.output(states[-1]), y, None, 1.0
    else:
        cols = y[:, first_step:first_step + T].T
        scored = cols >= 0
        n = int(scored.sum())
        if n == 0:
            return None
        h = cell.output(states).reshape(T * B, -1)
        labels, mask = np.maximum(cols, 0).reshape(-1), scored.reshape(-1).astype(states.dtype)
        share = n / int((y >= 0).sum())
    loss, correct, grads, d_h = readout.loss_and_grads(h, labels, mask)
    n = len(labels) if mask is None else int(mask.sum())
    if share != 1.0:
        d_h *= share
        for g in grads.values():
            g *= share
    d_states = np.zeros_like(states)
    H = d_h.shape[-1]
    if y.ndim == 1:
        d_states[-1, :, :H] = d_h
    else:
        d_states[..., :H] = d_h.reshape(T, B, H)
    return (loss * n, correct, n), grads, d_states


@dataclass
class InFlight:
    """What a box keeps of batch b: the BPTT tape until its future gradient is known, then h_end for M."""
    tape: tuple | None
    d_states: np.ndarray | None    # the readout's gradient for each of the box's states
    readout_grads: dict | None
    h_end: np.ndarray
    y: np.ndarray
    t_received: float
    param_staleness: int           # how many updates old the tied weights that made h_end were
    updates: int = 0               # the box's update count when b's update was applied
    g_hat: np.ndarray | None = None
    latency: float = 0.0


class TimeBox:
    """Box j of K: T steps of the cell from the incoming state, BPTT seeded by M_j(h_end) (or cut, or true)."""

    def __init__(self, index: int, cfg: dict):
        self.index, self.steps = index, cfg["steps_per_box"]
        self.first, self.last = index == 1, index == cfg["boxes"]
        self.mode, self.tied = cfg["mode"], not cfg["untied"]
        # Tied: every box starts from the service's initial weights (version 0) without a transfer.
        self.cell, self.readout = make_model(cfg, 0 if self.tied else index)
        self.groups = groups(self.cell, self.readout)
        self.version = 0
        self.opts = None
        if not self.tied:
            self.opts = {g: optimizers.make(cfg["optimizer"], p, cfg["lr"]) for g, p in self.groups.items()}
        self.base_lr, self.schedule, self.total_steps = cfg["lr"], cfg["schedule"], cfg["total_steps"]
        self.synth = None
        # The last box's future gradient is exactly zero (the sequence ends): it needs no synthesizer.
        if self.mode in ("dni", "cdni") and not self.last:
            rng = np.random.default_rng([cfg["seed"], index, 1])
            n_classes = cfg["n_classes"] if self.mode == "cdni" else 0
            self.synth = Synthesizer(self.cell.state_size, rng, n_classes, cfg["synth_hidden"])
            self.synth_opt = optimizers.make("adam", self.synth.params, cfg["synth_lr"])
            self.synth_scale = cfg["synth_scale"]
        self.cache: OrderedDict[int, InFlight] = OrderedDict()
        self.capacity = cfg["cache"]
        self.updates = 0
        self.evicted = 0

    def params(self) -> dict[str, np.ndarray]:
        return flat(self.cell, self.readout)

    def load(self, arrays: dict[str, np.ndarray], version: int) -> None:
        """Use these weights from now on, as given (not copied: tied copies off the wire are read-only)."""
        for name, a in arrays.items():
            group, key = name.split(".", 1)
            own = self.groups[group]
            if own[key].shape != a.shape:
                raise ValueError(f"box {self.index}: {name} has shape {a.shape}, expected {own[key].shape}")
            own[key] = a
        self.version = version

    def _inputs(self, xs: np.ndarray) -> np.ndarray:
        # A single step of input means "the same input at every step" (the seed task's layout):
        # it crosses the wire once instead of T times.
        if xs.shape[0] == 1 and self.steps > 1:
            return np.broadcast_to(xs, (self.steps, *xs.shape[1:]))
        if xs.shape[0] != self.steps:
            raise ValueError(f"box {self.index}: got {xs.shape[0]} steps of input, expected {self.steps} (or 1)")
        return xs

    def _add(self, stats: np.ndarray, scored) -> np.ndarray:
        out = np.array(stats, np.float64)
        if scored is not None:
            out += scored[0]
        return out

    def forward_train(self, b: int, xs: np.ndarray, state0: np.ndarray, y: np.ndarray, stats: np.ndarray,
                      t_received: float, param_staleness: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Unroll over the box; returns (the last state for the next box, running [loss_sum, correct, n])."""
        states, tape = self.cell.forward(self._inputs(xs), state0)
        scored = score(self.cell, self.readout, states, y, (self.index - 1) * self.steps, self.last)
        d_states, r_grads = (scored[2], scored[1]) if scored else (np.zeros_like(states), None)
        self.cache[b] = InFlight(tape, d_states, r_grads, states[-1], y, t_received, param_staleness)
        while len(self.cache) > self.capacity:
            self.cache.popitem(last=False)
            self.evicted += 1
        return states[-1], self._add(stats, scored)

    def evaluate(self, xs: np.ndarray, state0: np.ndarray, y: np.ndarray, stats: np.ndarray):
        """Forward only: (last state, running stats); nothing cached, nothing updated."""
        states, _ = self.cell.forward(self._inputs(xs), state0)
        scored = score(self.cell, self.readout, states, y, (self.index - 1) * self.steps, self.last)
        return states[-1], self._add(stats, scored)

    def future_gradient(self, b: int) -> np.ndarray | None:
        """M_j(h_end) (cDNI: M_j(h_end, y)), scaled: the gradient predicted to arrive from the boxes after this one.

        The scale (the paper's 0.1 for RNNs) also enters the next target of M_{j-1}, which is
        built from this: a discount on the bootstrap, which otherwise amplified the
        synthesizers' noise from box to box (measured: 10-40x the true gradient's norm).
        """
        if self.synth is None:
            return None
        item = self.cache[b]
        item.g_hat = self.synth.predict(item.h_end, item.y if self.synth.conditioned else None)
        return item.g_hat * (self.synth_scale / len(item.h_end))

    def backward(self, b: int, d_last: np.ndarray | None) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
        """BPTT through the box seeded with d_last: (gradients by wire name, dL/dstate0 or None for box 1).

        Uses the weights the forward used, so call it before any update.
        """
        item = self.cache[b]
        if d_last is None and item.readout_grads is None:
            # No loss inside the box and none from the future (truncated BPTT, or past the end of
            # a Copy sequence): every gradient is exactly zero. Say so with no gradients at all,
            # rather than have an optimizer step on zeros.
            out, d_state0 = {}, np.zeros_like(item.h_end)
        else:
            grads, d_state0 = self.cell.backward(item.tape, item.d_states, d_last)
            out = named({"cell": grads, "readout": item.readout_grads or {}})
        item.tape = item.d_states = item.readout_grads = None  # free the unroll early
        return out, None if self.first else d_state0

    def apply(self, b: int, grads: dict[str, np.ndarray]) -> dict | None:
        """Take the update for batch b: locally when untied (tied: the caller pushed grads to the service).

        Returns b's metrics record if b is finished with (no synthesizer to train on its target).
        """
        if self.opts is not None:
            step_groups(self.opts, self.groups, grads,
                        scheduled_lr(self.base_lr, self.schedule, self.updates + 1, self.total_steps))
        self.updates += 1
        item = self.cache[b]
        item.updates = self.updates
        item.latency = time.perf_counter() - item.t_received
        if self.synth is None:
            del self.cache[b]
            return self._record(b, item)
        return None

    def learn(self, b: int, target: np.ndarray) -> dict | None:
        """Train M_j on (h_end of b, the next box's gradient for its incoming state); None if b was evicted."""
        item = self.cache.pop(b, None)
        if item is None:
            return None
        y = item.y if self.synth.conditioned else None
        # M works in per-example units (the gradient of the summed loss, B times the mean's):
        # Adam's steps do not shrink with the gradient, and would bury targets of the mean
        # loss's size (~1e-4 and below here) in noise of the size of the learning rate.
        loss, grads = self.synth.loss_and_grads(item.h_end, y, target * len(target))
        self.synth_opt.step(self.synth.params, grads)
        return {**self._record(b, item), "synth_loss": loss, "cos": cosine(item.g_hat, target),
                "staleness": self.updates - item.updates}

    def _record(self, b: int, item: InFlight) -> dict:
        rec = {"step": b, "latency_ms": item.latency * 1e3}
        if self.tied:
            rec["param_staleness"] = item.param_staleness
        return rec

    def state(self) -> dict[str, np.ndarray]:
        out = {} if self.tied else dict(self.params())
        if self.synth is not None:
            out.update({f"synth.{k}": v for k, v in self.synth.params.items()})
        return out


class ParamStore:
    """The tied weights every box shares, an optimizer per group, and a version that counts steps taken.

    Decoupled modes take a step per push, at once: each box's update lands as soon as it is made
    (K steps per batch). Backprop adds the K boxes' gradients of a batch, which is exactly the BPTT
    gradient, and takes one step per batch.
    """

    def __init__(self, cfg: dict):
        self.cell, self.readout = make_model(cfg, 0)
        self.groups = groups(self.cell, self.readout)
        self.opts = {g: optimizers.make(cfg["optimizer"], p, cfg["lr"]) for g, p in self.groups.items()}
        self.per_step = cfg["boxes"] if cfg["mode"] == "backprop" else 1
        self.base_lr, self.schedule, self.total_batches = cfg["lr"], cfg["schedule"], cfg["total_steps"]
        self.version = 0
        self.partial: dict[int, dict[int, dict]] = {}
        self._snapshot: tuple[int, dict] | None = None

    def params(self) -> dict[str, np.ndarray]:
        return flat(self.cell, self.readout)

    def check(self, grads: dict[str, np.ndarray]) -> None:
        """Raise ValueError unless every gradient names a tied parameter and has its shape."""
        own = self.params()
        for name, g in grads.items():
            if name not in own or own[name].shape != g.shape:
                raise ValueError(f"gradient {name!r} {g.shape} matches no tied parameter")

    def push(self, b: int, box: int, grads: dict[str, np.ndarray]) -> bool:
        """Box `box`'s gradients for batch b; True if a step was taken (the version moved)."""
        if self.per_step == 1:
            self.step(grads, b + 1)
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

    def step(self, grads: dict[str, np.ndarray], batches_done: int) -> None:
        """One optimizer step. The rate follows the batches, not the steps: how many steps a
        batch brings depends on the mode and on how many boxes have a loss to push (truncated
        BPTT on a label per sequence: only the last)."""
        step_groups(self.opts, self.groups, grads,
                    scheduled_lr(self.base_lr, self.schedule, batches_done, self.total_batches))
        self.version += 1

    def snapshot(self) -> dict[str, np.ndarray]:
        """Copies of the weights at this version: they are sent zero-copy, so nothing may write them after."""
        if self._snapshot is None or self._snapshot[0] != self.version:
            self._snapshot = (self.version, {k: v.copy() for k, v in self.params().items()})
        return self._snapshot[1]
