"""The Copy gain's diagnosis in one process: each boundary's synthetic gradient against the true one.

usage: python benchmarks/copy_probe.py [--every N] [--fresh N] [dni run options ...]

Trains the Copy curriculum (or Repeat Copy's) with the time boxes' own arithmetic in one process
(workers/numerics/rnn_reference.py: no staleness, no sockets, minutes instead of tens of them), on
`rnn.py copy`'s budget and boxes of 2 steps unless the options say otherwise (any `dni run` option:
--mode, --steps-per-box, --box-lambda, --synth-lr, ...). Every --every batches it prints a JSON line
with, per boundary j whose true gradient is not zero (box j's end, on --fresh fresh batches):
  cos    the cosine of box j's synthetic gradient (what seeds its BPTT) to the true gradient there,
         full BPTT from the sequence's end, one batch at a time as the runs' own `cos` (the mean)
  best   the cosine the best linear map of the state reaches: least squares on half the fresh
         batches, in the synthesizer's own units, scored on the other half (what M could learn now)
  far    the share of the true gradient's norm that comes from beyond box j+1 (what truncation loses)
and a last line with the longest length solved. --frozen N holds the core still instead: it is trained by
full BPTT for N batches at --copy-length, and then only the synthesizers learn, online, each regressing on
the true gradient at its boundary (can M learn the future's gradient when the core does not move under it?).
"""
from __future__ import annotations

import workers.runtime.blas  # noqa: F401  (first: pins BLAS threads before numpy loads)

# isort: split
import argparse
import json
import math
import sys

import numpy as np
from rnn import COPY, COPY_PLAN

from coordinator.config import add_arguments, from_args
from coordinator.plans.recurrent import SOLVED_BITS, Recurrent
from workers.numerics import rnn_reference
from workers.numerics.inflight import cosine
from workers.numerics.sequence_tasks import copy_steps

RIDGE = 1.0   # the least squares' ridge, in the units of the normalised state: keeps a 2*units-wide fit sane


def true_gradients(cell, readout, x: np.ndarray, y: np.ndarray, K: int):
    """Full BPTT over a batch (x batch-major, as the task samples it): per boundary j = 1 .. K-1, the last
    state of box j, the true gradient of the batch-mean loss there, and its part from box j+1's loss alone."""
    stretches = rnn_reference.unrolled(cell, readout, np.ascontiguousarray(x.transpose(1, 0, 2)), y, K)
    out, g = {}, None
    for j in range(K - 1, 0, -1):   # box j+1 (stretches[j]) hands boundary j its gradient
        tape, d_states = stretches[j].tape, stretches[j].d_states
        near = cell.backward(tape, d_states, None)[1]
        g = cell.backward(tape, d_states, g)[1]
        out[j] = (stretches[j - 1].states[-1], g, near)
    return out


def best_linear(states: list[np.ndarray], targets: list[np.ndarray]) -> float:
    """The mean batch cosine a least-squares linear map of the normalised state reaches on held-out batches."""
    def features(h):
        return np.hstack([h / np.sqrt((h ** 2).sum() / len(h)), np.ones((len(h), 1), h.dtype)])

    half = len(states) // 2
    X, G = np.concatenate([features(h) for h in states[:half]]), np.concatenate(targets[:half])
    W = np.linalg.solve(X.T @ X + RIDGE * np.eye(X.shape[1]), X.T @ G)
    return float(np.mean([cosine(features(h) @ W, g) for h, g in zip(states[half:], targets[half:])]))


def probe(plan, boxes, store, rng, fresh: int) -> dict:
    """Per boundary with a true gradient: cos, best, far (see the module's docstring)."""
    c = plan.cfg
    seen: dict[int, dict[str, list]] = {}
    for _ in range(fresh):
        x, y = plan.task.sample(rng, c.batch_size)
        for j, (h, g, near) in true_gradients(store.cell, store.readout, x, y, c.boxes).items():
            if not np.any(g):
                continue
            r = seen.setdefault(j, {"cos": [], "far": [], "h": [], "g": []})
            inflight = boxes[j - 1].inflight
            if inflight.learns:
                r["cos"].append(cosine(inflight.synth.gradient(h), g))
            r["far"].append(float(np.linalg.norm(g - near) / np.linalg.norm(g)))
            r["h"].append(h)
            r["g"].append(g)
    return {j: {"cos": round(float(np.mean(r["cos"])), 3) if r["cos"] else None,
                "best": round(best_linear(r["h"], r["g"]), 3), "far": round(float(np.mean(r["far"])), 3)}
            for j, r in sorted(seen.items())}


def frozen(plan, boxes, store, rng, fresh_rng, a) -> None:
    """--frozen: the core trained by full BPTT, then held; the synthesizers fitted online to the true gradient."""
    c = plan.cfg
    while plan.task.length < c.copy_length:
        plan.task.grow()
    for _ in range(a.frozen):
        x, y = plan.task.sample(rng, c.batch_size)
        rnn_reference.bptt_step(store, np.ascontiguousarray(x.transpose(1, 0, 2)), y)
    for b in range(1, c.epochs * c.copy_batches + 1):
        x, y = plan.task.sample(rng, c.batch_size)
        for j, (h, g, _) in true_gradients(store.cell, store.readout, x, y, c.boxes).items():
            inflight = boxes[j - 1].inflight
            if inflight.learns and np.any(g):
                inflight.synth_opt.step(inflight.synth.params, inflight.synth.fit_grads(h, None, g)[1])
        if b % a.every == 0:
            print(json.dumps({"batch": b, "length": plan.task.length, "frozen": a.frozen,
                              "boundaries": probe(plan, boxes, store, fresh_rng, a.fresh)}), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--every", type=int, default=500, help="batches between probes")
    p.add_argument("--fresh", type=int, default=24, help="fresh batches each probe scores on")
    p.add_argument("--frozen", type=int, default=0, metavar="N",
                   help="train the core by full BPTT for N batches at --copy-length, then hold it still")
    add_arguments(p)
    task = next((sys.argv[i + 1] for i, a in enumerate(sys.argv[:-1]) if a == "--task"), "copy")
    T = int(next((sys.argv[i + 1] for i, a in enumerate(sys.argv[:-1]) if a == "--steps-per-box"), 2))
    longest = COPY_PLAN[task][T]
    boxes = -(-copy_steps(longest, 2 if task == "repeat-copy" else 0) // T)
    defaults = [*COPY, "--model", "rnn", "--task", task, "--mode", "dni", "--steps-per-box", str(T),
                "--boxes", str(boxes), "--copy-length", str(longest), "--no-progress"]
    a = p.parse_args([*defaults, *sys.argv[1:]])
    cfg = from_args(a).validate()
    if cfg.stream:
        p.error("--stream: the probe trains each batch from the zero state (no carried state in one process)")
    plan = Recurrent(cfg, Recurrent.load_task(cfg))
    boxes, store = rnn_reference.build(plan.wire)
    rng, fresh_rng = np.random.default_rng(cfg.seed), np.random.default_rng([cfg.seed, 2])
    if a.frozen:
        return frozen(plan, boxes, store, rng, fresh_rng, a)
    b = solved = 0
    for epoch in range(cfg.epochs):
        for x, y in plan.task.train_batches(rng, cfg.batch_size):
            rnn_reference.step(boxes, store, b, plan.split(x, y))
            b += 1
            if b % a.every == 0:
                print(json.dumps({"batch": b, "length": plan.task.length,
                                  "boundaries": probe(plan, boxes, store, fresh_rng, a.fresh)}), flush=True)
        loss = rnn_reference.evaluate(boxes, store, [plan.split(plan.task.x_test, plan.task.y_test)])[1]
        if loss / math.log(2) < SOLVED_BITS:
            solved = plan.task.length
            if plan.task.length < cfg.copy_length:
                plan.task.grow()
    print(json.dumps({"solved": solved, "length": plan.task.length, "bits": round(loss / math.log(2), 3)}))


if __name__ == "__main__":
    main()
