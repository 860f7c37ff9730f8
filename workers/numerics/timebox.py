"""A time box's numerics: the cell and readout over its steps, BPTT through them, its in-flight batches.

No sockets and no clocks here: the worker roles and the single-process reference
(workers/numerics/rnn_reference.py) drive the same objects, so they do the very same arithmetic.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import numpy as np

from workers.numerics.auxtask import AUX, AuxHead
from workers.numerics.boxmodel import (
    add_into,
    grouped,
    has_aux,
    make_model,
    model_groups,
    named,
    shares_synth,
    synth_rng,
)
from workers.numerics.inflight import Batch, Fit, InFlight
from workers.numerics.optimizers import SYNTH, Scheduled
from workers.numerics.snapshot import copy_into, join, part

if TYPE_CHECKING:
    from protocol.wireconfig import WireConfig

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
        self.version = 0
        # The last box's future gradient is exactly zero (the sequence ends): it needs no synthesizer. Under --stream
        # box 1's sequences go on from the last box's final state of the batch --window before: in dni and cdni the
        # last box then learns that future's gradient from box 1, as every other box learns from the next.
        self.carries = cfg.stream and self.mode in ("dni", "cdni")
        learns = self.mode in ("dni", "cdni") and (not self.last or self.carries)
        self.feeds_back = not self.first or self.carries   # a box before it takes the gradient for its state
        shared = shares_synth(cfg)
        self.aux = AuxHead(self.cell.state_size) if has_aux(cfg) and learns else None
        # BP(lambda > 0): box j-1's target waits for this box's own (see `learn`). Not box 1's to the last box
        # under --stream: around the ring each target would wait for the next, and the last box's M never learnt;
        # that boundary keeps the bootstrap, sent at the update.
        self.box_lambda = cfg.box_lambda
        self.defers = learns and self.feeds_back and self.box_lambda > 0 and not self.first
        self.inflight = InFlight(cfg, self.cell.state_size, cfg.n_classes,
                                 synth_rng(cfg, 0 if shared else index) if learns else None,
                                 shared=shared, keep_tape=self.defers or self.aux is not None)
        # Every box holds what the service holds (the last box too: it only carries the shared M and P).
        self.groups = model_groups(cfg, self.cell, self.readout, self.inflight.synth and self.inflight.synth.params)
        if self.aux is not None:
            self.aux.params = self.groups[AUX]
        self.opt = None if self.tied else Scheduled(self.groups, cfg)
        self.pending: dict[str, np.ndarray] = {}   # gradients of targets that came after b's update (--aux)
        self.synth_scale = cfg.synth_scale

    def params(self) -> dict[str, np.ndarray]:
        return named(self.groups)

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
        batch = self.inflight[b]
        # A sequence that has ended (Copy's, padded to fill the boxes) has no future: its gradient from
        # there is exactly zero. M's guess of it would still reach the core, and every push of it is a step
        # of the tied weights' Adam, at its full rate whatever the gradient's size.
        # Under --stream the future goes on into the next batch's sequences: it is never empty.
        ahead = batch.y[:, self.index * self.steps:] >= 0 if batch.y.ndim == 2 and not self.carries else None
        if ahead is not None and not ahead.any():
            batch.g_hat = np.zeros_like(batch.h)
            return None
        g_hat = self.inflight.predict(b)
        if ahead is not None:
            g_hat[~ahead.any(axis=1)] = 0.0   # Repeat Copy: the sequences written fewer times end sooner
        return g_hat * self.synth_scale

    def bptt(self, b: int, d_last: np.ndarray | None) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
        """BPTT through the box seeded with d_last: (gradients by wire name, dL/dstate0, or None where no box
        before takes it: box 1 unless it carries the stream).

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
        if not self.inflight.keep_tape:
            batch.tape = None  # free the unroll early
        return add_into(out, self.take_pending()), d_state0 if self.feeds_back and not self.defers else None

    def take_pending(self) -> dict[str, np.ndarray]:
        """Gradients made since the last update, for the next (by wire name): a shared M's fits, DNI + Aux's."""
        out, self.pending = self.pending, {}
        return add_into(out, named({SYNTH: self.inflight.take_pending()}))

    def learn(self, b: int, target: np.ndarray, ahead: np.ndarray | None = None
              ) -> tuple[Fit | None, np.ndarray | None]:
        """M_j fitted to b's target (the gradient at h_end from box j+1); and, with BP(lambda > 0), box j-1's
        target: lambda * target + (1 - lambda) * ĝ_b, pushed back through this box's unroll of b with its
        current weights, together with the box's own loss (None: box 1, bootstrapping, or b gone).
        With --aux, P fitted to `ahead` (box j+1's synthetic gradient of b; None: zero, none comes after).

        At lambda 1 every M_j regresses on the true boundary gradient, later by a trip back along the
        boxes; at 0 (the paper's bootstrap, sent at the update) on a discounted sum of its successors'
        predictions, whose errors compound box by box.
        """
        fit = self.inflight.fit(b, target)
        if fit is None or not self.inflight.keep_tape:
            return fit, None
        batch = fit.batch
        tape, d_states, _ = batch.tape
        batch.tape = None
        if self.aux is not None:
            self._aux_task(tape, batch.h, ahead)
        if not self.defers:
            return fit, None
        g = target if self.box_lambda == 1 else (self.box_lambda * target
                                                 + (1 - self.box_lambda) * self.synth_scale * batch.g_hat)
        return fit, self.cell.backward(tape, d_states, g)[1]

    def _aux_task(self, tape, h: np.ndarray, ahead: np.ndarray | None) -> None:
        """DNI + Aux: P's regression on the synthetic gradient a box ahead, in this box's units (as M's
        targets: per example, over sigma), its gradient into the core through h at the synthetic gradient's
        size; both join the next update."""
        sigma = self.inflight.synth.sigma
        target = np.zeros_like(h) if ahead is None else ahead * h.dtype.type(len(h) / sigma)
        _, p_grads, d_h = self.aux.loss_and_grads(h, target, self.synth_scale * sigma)
        cell_grads, _ = self.cell.backward(tape, np.zeros(tape[2].shape, h.dtype), d_h)
        add_into(self.pending, named({"cell": cell_grads, AUX: p_grads}))

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
