"""Time boxes in one process, driving the same TimeBox and ParamStore objects; and plain full BPTT.

`step` is the serial arithmetic of a distributed step with no staleness (for quick experiments
and checkpoint evaluation); `bptt_step` is plain full BPTT over the whole sequence, the
transparency reference that backprop mode on K processes must reproduce bit for bit.
"""
from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from workers.numerics.boxmodel import named
from workers.numerics.paramstore import ParamStore
from workers.numerics.timebox import TimeBox, score, train_step, update_step

if TYPE_CHECKING:
    from protocol.wireconfig import WireConfig


def build(cfg: WireConfig) -> tuple[list[TimeBox], ParamStore | None]:
    boxes = [TimeBox(j, cfg) for j in range(1, cfg.boxes + 1)]
    store = None if cfg.untied else ParamStore(cfg)
    return boxes, store


def _share(boxes: list[TimeBox], store: ParamStore | None) -> None:
    # Staleness 0: every box reads the store's live arrays, which its optimizer updates in place.
    if store is not None:
        for box in boxes:
            box.load(store.params(), store.version)


def step(boxes: list[TimeBox], store: ParamStore | None, b: int, parts: dict[int, dict]) -> np.ndarray:
    """One training step on batch b (parts: box -> its arrays, as the coordinator sends them); returns stats."""
    _share(boxes, store)
    y = parts[1]["y"]
    state, stats = boxes[0].cell.zero_state(len(y)), np.zeros(3)

    def push(box: TimeBox):
        return None if store is None else partial(store.push, b, box.index)

    sent = {}   # box j -> the target it handed box j-1 (BP(lambda > 0): on the way back, below)
    for box in boxes:
        state, stats, sent[box.index], _ = train_step(box, b, parts[box.index]["x"], state, y, stats,
                                                      push=push(box))
    if boxes[0].locked:   # the true gradient goes back box by box, from the last box's target on
        target = sent[len(boxes)]
        for box in reversed(boxes[:-1]):
            target, _ = update_step(box, b, target, push=push(box))
        return stats
    ahead = None   # box j+1's synthetic gradient of b, for DNI + Aux (none from the last box)
    for box in reversed(boxes[:-1]):   # each M_j fitted to box j+1's target, latest box first
        if box.inflight.learns:
            fit, below = box.learn(b, sent[box.index + 1], ahead)
            sent[box.index] = sent[box.index] if below is None else below
            ahead = fit.batch.g_hat
    return stats


def evaluate(boxes: list[TimeBox], store: ParamStore | None, batches) -> tuple[float, float]:
    """(accuracy, mean loss per scored output) over an iterable of parts, box by box as the pipeline does."""
    _share(boxes, store)
    total = np.zeros(3)
    for parts in batches:
        y = parts[1]["y"]
        state, stats = boxes[0].cell.zero_state(len(y)), np.zeros(3)
        for box in boxes:
            state, stats = box.forward(parts[box.index]["x"], state, y, stats)
        total += stats
    return total[1] / total[2], total[0] / total[2]


class Stretch(NamedTuple):
    """One box's stretch of an unrolled sequence: its states and tape, its score (None where it has no loss)
    and dL/d(its states) from its own loss."""
    states: np.ndarray
    tape: object
    scored: tuple | None
    d_states: np.ndarray


def unrolled(cell, readout, xs: np.ndarray, y: np.ndarray, K: int) -> list[Stretch]:
    """The sequence xs (steps, B, n_in) unrolled from the zero state in the K stretches K boxes take it in."""
    T, out, state = xs.shape[0] // K, [], cell.zero_state(xs.shape[1])
    for j in range(K):
        states, tape = cell.forward(xs[j * T:(j + 1) * T], state)
        scored = score(cell, readout, states, y, j * T, j == K - 1)
        out.append(Stretch(states, tape, scored, scored[2] if scored else np.zeros_like(states)))
        state = states[-1]
    return out


def bptt_step(store: ParamStore, xs: np.ndarray, y: np.ndarray) -> float:
    """Full BPTT: the whole sequence xs (steps, B, n_in) unrolled from the zero state and backpropagated
    from its end to its start, one step; returns the mean loss.

    A weight gradient is a sum over steps, and a float sum depends on its order: the sequence is taken
    in the K stretches of T steps the boxes take, and each stretch's gradients go to the store as that
    box's push, which adds them in box order. The true gradient, summed the way backprop over K
    processes sums it: the two must agree bit for bit.
    """
    cell, K = store.cell, store.per_step
    stretches = unrolled(cell, store.readout, xs, y, K)
    b, total, d_next = store.version, np.zeros(3), None
    for j in reversed(range(K)):   # the last stretch first: each hands dL/d(its first state) to the one before
        stretch = stretches[j]
        grads, d_next = cell.backward(stretch.tape, stretch.d_states, d_next)
        r_grads = stretch.scored[1] if stretch.scored else {}
        total += stretch.scored[0] if stretch.scored else 0
        store.push(b, j + 1, named({"cell": grads, "readout": r_grads}))   # the step is taken at the K-th
    return total[0] / total[2]


def load_checkpoint(boxes: list[TimeBox], store: ParamStore | None, states: dict[int, dict]) -> None:
    """Weights from a checkpoint: the service's stage (K+1) when tied, each box's own otherwise."""
    if store is not None:
        own = store.params()
        saved = {k: v for k, v in states.get(len(boxes) + 1, {}).items() if k in own}
        if set(saved) != set(own):
            raise ValueError(f"checkpoint holds tied weights {sorted(saved)}, expected {sorted(own)}")
        for k, a in own.items():
            a[...] = saved[k]
        return
    for box in boxes:
        want = box.params()
        saved = {k: v for k, v in states.get(box.index, {}).items() if k in want}
        if set(saved) != set(want):
            raise ValueError(f"box {box.index}: checkpoint holds {sorted(saved)}, expected {sorted(want)}")
        box.load({k: np.asarray(v, want[k].dtype) for k, v in saved.items()}, 0)
