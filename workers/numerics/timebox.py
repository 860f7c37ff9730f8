"""A time box's numerics: the cell and readout over its steps, BPTT through them, its in-flight batches.

No sockets and no clocks here: the worker roles and the single-process reference
(workers/numerics/rnn_reference.py) drive the same objects, so they do the very same arithmetic.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import numpy as np

from workers.numerics.cells import LSTMCell, TanhCell
from workers.numerics.inflight import Batch, InFlight
from workers.numerics.layers import Head
from workers.numerics.optimizers import Scheduled
from workers.numerics.snapshot import copy_into, join, part

if TYPE_CHECKING:
    from protocol.wireconfig import WireConfig

CELLS = {"tanh": TanhCell, "lstm": LSTMCell}


def make_model(cfg: WireConfig, index: int) -> tuple:
    """The cell and readout box `index` starts from; index 0 is the tied set every box shares."""
    rng = np.random.default_rng([cfg.seed, index])
    cell = CELLS[cfg.cell](cfg.n_in, cfg.units, rng)
    return cell, Head(cfg.units, cfg.n_classes, rng)


def groups(cell, readout) -> dict[str, dict[str, np.ndarray]]:
    """The two parameter groups, by the prefix their arrays travel under."""
    return {"cell": cell.params, "readout": readout.params}


def named(by_group: dict[str, dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Groups of arrays under one namespace ("cell.Wx", "readout.W", ...), as on the wire."""
    return {f"{group}.{k}": v for group, arrays in by_group.items() for k, v in arrays.items()}


def flat(cell, readout) -> dict[str, np.ndarray]:
    """Both parameter groups' arrays by their wire names."""
    return named(groups(cell, readout))


def grouped(grads: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """Wire-named arrays ("cell.Wx", ...) back into their groups: the inverse of `named`."""
    out: dict[str, dict[str, np.ndarray]] = {}
    for name, g in grads.items():
        group, key = name.split(".", 1)
        out.setdefault(group, {})[key] = g
    return out


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


class TimeBox:
    """Box j of K: T steps of the cell from the incoming state, BPTT seeded by M_j(h_end) (or cut, or true)."""

    def __init__(self, index: int, cfg: WireConfig):
        self.index, self.steps = index, cfg.steps_per_box
        self.first, self.last = index == 1, index == cfg.boxes
        self.mode, self.tied = cfg.mode, not cfg.untied
        self.locked = self.mode == "backprop"
        # Tied: every box starts from the service's initial weights (version 0) without a transfer.
        self.cell, self.readout = make_model(cfg, 0 if self.tied else index)
        self.groups = groups(self.cell, self.readout)
        self.version = 0
        self.opt = None if self.tied else Scheduled(self.groups, cfg)
        # The last box's future gradient is exactly zero (the sequence ends): it needs no synthesizer.
        learns = self.mode in ("dni", "cdni") and not self.last
        self.inflight = InFlight(cfg, self.cell.state_size, cfg.n_classes,
                                 np.random.default_rng([cfg.seed, index, 1]) if learns else None)
        self.synth_scale = cfg.synth_scale

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

    def _unroll(self, xs: np.ndarray, state0: np.ndarray, y: np.ndarray, stats: np.ndarray):
        """(states, tape, what the readout scored or None, running [loss_sum, correct, n] with it added)."""
        states, tape = self.cell.forward(self._inputs(xs), state0)
        scored = score(self.cell, self.readout, states, y, (self.index - 1) * self.steps, self.last)
        out = np.array(stats, np.float64)
        if scored is not None:
            out += scored[0]
        return states, tape, scored, out

    def forward(self, xs: np.ndarray, state0: np.ndarray, y: np.ndarray, stats: np.ndarray):
        """Evaluation: (last state, running stats); nothing cached, nothing updated."""
        states, _, _, stats = self._unroll(xs, state0, y, stats)
        return states[-1], stats

    def forward_and_keep(self, b: int, xs: np.ndarray, state0: np.ndarray, y: np.ndarray, stats: np.ndarray,
                         t_received: float = 0.0, param_staleness: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Unroll over the box, keeping b for BPTT; returns (the last state for the next box, running stats)."""
        states, tape, scored, stats = self._unroll(xs, state0, y, stats)
        d_states, r_grads = (scored[2], scored[1]) if scored else (np.zeros_like(states), None)
        self.inflight.keep(b, Batch((tape, d_states, r_grads), states[-1], y, t_received, 0.0, param_staleness))
        return states[-1], stats

    def future_gradient(self, b: int) -> np.ndarray | None:
        """M_j(h_end) (cDNI: M_j(h_end, y)), scaled: the gradient predicted to arrive from the boxes after this one.

        The scale (the paper's 0.1 for RNNs) also enters the next target of M_{j-1}, which is
        built from this: a discount on the bootstrap, which otherwise amplified the
        synthesizers' noise from box to box (measured: 10-40x the true gradient's norm).
        """
        if not self.inflight.learns:
            return None
        return self.inflight.predict(b) * self.synth_scale

    def bptt(self, b: int, d_last: np.ndarray | None) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
        """BPTT through the box seeded with d_last: (gradients by wire name, dL/dstate0 or None for box 1).

        Uses the weights the forward used, so call it before any update.
        """
        batch = self.inflight[b]
        tape, d_states, readout_grads = batch.tape
        if d_last is None and readout_grads is None:
            # No loss inside the box and none from the future (truncated BPTT, or past the end of
            # a Copy sequence): every gradient is exactly zero. Say so with no gradients at all,
            # rather than have an optimizer step on zeros.
            out, d_state0 = {}, np.zeros_like(batch.h)
        else:
            grads, d_state0 = self.cell.backward(tape, d_states, d_last)
            out = named({"cell": grads, "readout": readout_grads or {}})
        batch.tape = None  # free the unroll early
        return out, None if self.first else d_state0

    def update(self, b: int, grads: dict[str, np.ndarray]) -> Batch:
        """Take the update for batch b: locally when untied (tied: the caller pushed grads to the service).

        Returns b's in-flight entry.
        """
        if self.opt is not None:
            self.opt.step(grouped(grads), self.inflight.updates + 1)
        return self.inflight.updated(b)

    def state(self) -> dict[str, np.ndarray]:
        # Tied weights and their optimizer live in the parameter service, which saves them.
        own = {} if self.tied else {**self.params(), **join(opt=self.opt.state())}
        return {**own, **self.inflight.state()}

    def load_state(self, saved: dict[str, np.ndarray]) -> None:
        if not self.tied:
            copy_into(self.params(), saved)
            self.opt.load_state(part(saved, "opt"))
        self.inflight.load_state(saved)


def train_step(box: TimeBox, b: int, xs: np.ndarray, state0: np.ndarray, y: np.ndarray, stats: np.ndarray,
               t_received: float = 0.0, param_staleness: int = 0, send_on: Callable | None = None,
               send_back: Callable | None = None, push: Callable | None = None) -> tuple:
    """Box j's part of training batch b, in the one order every driver follows.

    1. unroll from state0, b kept in flight;  2. the last state and running stats handed on at
    once (send_on), so box j+1 starts;  then `update_step`, seeded with M_j(h_end) (truncated
    BPTT, and the last box, whose sequence ends: with nothing). Locked backprop's boxes stop
    after 2, but the last: their update waits for the true gradient from box j+1.
    Returns (last state, running stats, δ for box j-1 or None, b's in-flight entry once updated or None).
    """
    h, stats = box.forward_and_keep(b, xs, state0, y, stats, t_received, param_staleness)
    if send_on is not None:
        send_on(h, stats)
    if box.locked and not box.last:
        return h, stats, None, None
    return (h, stats, *update_step(box, b, box.future_gradient(b), send_back, push))


def update_step(box: TimeBox, b: int, d_last: np.ndarray | None, send_back: Callable | None = None,
                push: Callable | None = None) -> tuple[np.ndarray | None, Batch]:
    """3. BPTT seeded with d_last;  4. δ for box j-1 handed back (send_back);  5. the gradients
    pushed to the tied weights (push): in backprop even none, as the store adds up all K boxes'
    of a batch;  6. the update, made here when untied.  Returns (δ for box j-1 or None, b's entry)."""
    grads, target = box.bptt(b, d_last)
    if send_back is not None and target is not None:
        send_back(target)
    if push is not None and (grads or box.locked):
        push(grads)
    return target, box.update(b, grads)
