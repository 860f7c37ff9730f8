"""`dni bench sweep`: choose defaults on a validation split with the single-process reference.

Every configuration of the grid (modes x stages x optimizer/rate x synthesizer rate x
synthesizer width x seeds) trains the same Stage objects as the workers, in one process,
on the training set minus its last --val examples, and is scored on those held-out
examples: the test set is never read. --delay D holds each synthesizer's target back by D
batches (and so lets the stage make D more updates first), as the credit window does in
the multi-process run (--window 2: about one update of staleness); --hop-delay H adds H for
every stage a target comes down through, as BP(lambda > 0) targets come down a pipeline whose
round trip takes many batches (a deep one over slow links); --eval-every and --target give
the samples trained on until the validation accuracy first reached the target.
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys

import workers.runtime.blas  # noqa: F401  (first: pins BLAS threads before numpy loads)
from coordinator.bench.defaults.delayed import train_one
from coordinator.config import Config
from coordinator.data import generated_task, load_mnist
from coordinator.lists import parse


def load(data_dir: str, classes: str = ""):
    if not data_dir:
        return generated_task()
    return load_mnist(data_dir, parse(classes, "--classes") or None)


def grid(args) -> list[dict]:
    out = []
    for mode, stages, opt_lr, slr, sh, lam, seed, warmup, hop in itertools.product(
            parse(args.modes, "--modes", str), parse(args.stages, "--stages"), parse(args.lr, "--lr", str),
            parse(args.synth_lr, "--synth-lr", float), parse(args.synth_hidden, "--synth-hidden"),
            parse(args.bp_lambda, "--bp-lambda", float), parse(args.seeds, "--seeds"), parse(args.warmup, "--warmup"),
            parse(args.hop_delay, "--hop-delay", float, low=0)):
        opt, _, lr = opt_lr.rpartition(":")
        spec = {"mode": mode, "stages": stages, "width": args.width, "optimizer": opt or "adam", "lr": float(lr),
                "synth_lr": slr, "synth_hidden": sh, "bp_lambda": lam, "seed": seed, "warmup": warmup, "hop": hop}
        if mode == "backprop":   # no synthesizer: its options do not matter, one run suffices
            spec["synth_lr"], spec["synth_hidden"], spec["bp_lambda"], spec["hop"] = 0.0, 0, 0.0, 0.0
        if spec not in out:
            out.append(spec)
    return out


def table(rows: list[dict]) -> str:
    head = ("| mode | stages | optimizer lr | synth lr | synth hidden | bp λ | seed | hop | val acc | samples to "
            "target | train loss first → last epoch | last-epoch cos per stage | s |")
    lines = [head, "|" + " --- |" * 13]
    for r in rows:
        warmup = f" w{r['warmup']}" if r.get("warmup") else ""
        lines.append(f"| {r['mode']} | {r['stages']} | {r['optimizer']} {r['lr']:g} | {r['synth_lr']:g} | "
                     f"{r['synth_hidden']} | {r.get('bp_lambda', 0):g} | {r['seed']}{warmup} | {r.get('hop', 0):g} | "
                     f"{100 * r['val_accuracy']:.2f}% | {r.get('samples_to_target') or '-'} | "
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
    p.add_argument("--bp-lambda", default=str(Config.bp_lambda),
                   help="BP(lambda) of the targets sent down (0 = bootstrap)")
    p.add_argument("--seeds", default="0")
    p.add_argument("--warmup", default="0", help="experiment: batches over which the layers' rate ramps up "
                   "(not a run option; 0 = none, as dni run does)")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--delay", type=int, default=1, help="batches a synthesizer's target arrives late (window 2: 1)")
    p.add_argument("--hop-delay", default="0", help="batches more for every stage a target comes down through, "
                   "a list (BP(lambda > 0) down a pipeline: stage 1's arrives delay + (stages-2) * this late)")
    p.add_argument("--eval-every", type=int, default=0, help="batches between validations (0: after each epoch "
                   "only), for --target")
    p.add_argument("--target", type=float, default=0.9, help="with --eval-every: the validation accuracy whose "
                   "first reaching is reported, in samples trained on")
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
        r = train_one(data, spec, args.epochs, args.batch, args.delay, args.val, args.train_subset, args.centre,
                      args.eval_every, args.target)
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
