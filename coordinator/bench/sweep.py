"""`dni bench sweep`: choose defaults on a validation split with the single-process reference.

Every configuration of the grid (modes x stages x optimizer/rate x synthesizer rate x
synthesizer width x seeds) trains the same Stage objects as the workers, in one process,
on the training set minus its last --val examples, and is scored on those held-out
examples: the test set is never read. --delay D holds each synthesizer's target back by D
batches (and so lets the stage make D more updates first), as the credit window does in
the multi-process run (--window 2: about one update of staleness).
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from collections import deque

import numpy as np

import workers.runtime.blas  # noqa: F401  (first: pins BLAS threads before numpy loads)
from coordinator.config import Config
from coordinator.data import Dataset, batches, generated_task, load_mnist
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
                     bp_lambda=spec["bp_lambda"], seed=spec["seed"], log_every=1, cache=4 * delay + 16)
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


def load(data_dir: str, classes: str = ""):
    if not data_dir:
        return generated_task()
    return load_mnist(data_dir, [int(c) for c in classes.split(",")] if classes else None)


def _floats(text: str) -> list[float]:
    return [float(p) for p in text.split(",") if p.strip()]


def _ints(text: str) -> list[int]:
    return [int(p) for p in text.split(",") if p.strip()]


def grid(args) -> list[dict]:
    out = []
    for mode, stages, opt_lr, slr, sh, lam, seed, warmup in itertools.product(
            args.modes.split(","), _ints(args.stages), args.lr.split(","), _floats(args.synth_lr),
            _ints(args.synth_hidden), _floats(args.bp_lambda), _ints(args.seeds), _ints(args.warmup)):
        opt, _, lr = opt_lr.rpartition(":")
        spec = {"mode": mode, "stages": stages, "width": args.width, "optimizer": opt or "adam", "lr": float(lr),
                "synth_lr": slr, "synth_hidden": sh, "bp_lambda": lam, "seed": seed, "warmup": warmup}
        if mode == "backprop":   # no synthesizer: its options do not matter, one run suffices
            spec["synth_lr"], spec["synth_hidden"], spec["bp_lambda"] = 0.0, 0, 0.0
        if spec not in out:
            out.append(spec)
    return out


def table(rows: list[dict]) -> str:
    head = ("| mode | stages | optimizer lr | synth lr | synth hidden | bp λ | seed | val acc | "
            "train loss first → last epoch | last-epoch cos per stage | s |")
    lines = [head, "|" + " --- |" * 11]
    for r in rows:
        lines.append(f"| {r['mode']} | {r['stages']} | {r['optimizer']} {r['lr']:g} | {r['synth_lr']:g} | "
                     f"{r['synth_hidden']} | {r.get('bp_lambda', 0):g} | {r['seed']}{' w' + str(r['warmup']) if r.get('warmup') else ''} | {100 * r['val_accuracy']:.2f}% | "
                     f"{r['train_loss'][0]:.3f} → {r['train_loss'][-1]:.4f} | "
                     f"{', '.join(f'{c:.2f}' for c in r['last_epoch_cos']) or '-'} | {r['seconds']} |")
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="", help="MNIST-layout IDX directory (empty = the generated task)")
    p.add_argument("--classes", default="", help="keep only these classes")
    p.add_argument("--modes", default="backprop,cdni,dni")
    p.add_argument("--stages", default="3", help="stages (hidden layers + head), comma-separated")
    p.add_argument("--width", type=int, default=256, help="hidden layer width")
    p.add_argument("--lr", default="adam:1e-3", help="layers' OPTIMIZER:RATE list, e.g. adam:3e-4,sgd:0.03")
    p.add_argument("--synth-lr", default=str(Config.synth_lr), help="synthesizer Adam rates")
    p.add_argument("--synth-hidden", default="0", help="synthesizer hidden widths (0 = linear)")
    p.add_argument("--bp-lambda", default=str(Config.bp_lambda), help="BP(lambda) of the targets sent down (0 = bootstrap)")
    p.add_argument("--seeds", default="0")
    p.add_argument("--warmup", default="0", help="experiment: batches over which the layers' rate ramps up "
                   "(not a run option; 0 = none, as dni run does)")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--delay", type=int, default=1, help="batches a synthesizer's target arrives late (window 2: 1)")
    p.add_argument("--val", type=int, default=10000, help="last training examples held out for validation")
    p.add_argument("--train-subset", type=int, default=0, help="train on the first N of the rest (0 = all)")
    p.add_argument("--centre", action=argparse.BooleanOptionalAction, default=Config.centre,
                   help="subtract the training examples' mean from every input, as dni run does")
    p.add_argument("--json", metavar="FILE", help="append each result as a JSON line to FILE")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="dni bench sweep", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_arguments(p)
    return run(p.parse_args(argv))


def run(args) -> int:
    data = load(args.data, args.classes)
    rows = []
    for spec in grid(args):
        r = train_one(data, spec, args.epochs, args.batch, args.delay, args.val, args.train_subset, args.centre)
        r.update(data=data.name, epochs=args.epochs, delay=args.delay, train_subset=args.train_subset, val=args.val,
                 centre=args.centre)
        rows.append(r)
        print(table([r]).splitlines()[-1], flush=True)
        if args.json:
            with open(args.json, "a") as f:
                f.write(json.dumps(r) + "\n")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
