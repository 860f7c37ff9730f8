"""Issue 4's figures for recurrent time boxes: every run a real `dni run`, one after another (2 cores).

usage: python benchmarks/rnn.py seeds|seqmnist|copy|repeat-copy [--data DIR] [--out DIR] [--quick] [--seed N]
                                [--modes M,...] [--steps-per-box T,...] [--flags='...']
  seeds        the seed task (MNIST 0 vs 1, K=4 tanh boxes, dni) over 10 seeds, whole vector and chunks
  seqmnist     sequential MNIST (28 rows, LSTM boxes of 7 steps) in dni, cdni, truncated, backprop
  copy         the Copy task's curriculum: longest length solved by dni (at its defaults), DNI + Aux
               (dni+aux), truncated and full BPTT (backprop), boxes of T steps (2 and 4)
  repeat-copy  the same for Repeat Copy (each sequence written 1 or 2 times)
Each run's directory (summary.json, metrics.jsonl) stays under --out; the table is printed and
written next to them as table.json (rows of earlier calls with other --modes or --steps-per-box kept).
--quick shrinks every budget (a smoke test of the script).
--seed and --modes apply to seqmnist and copy (another seed's runs go to runs/rnn-EXPERIMENT-seedN;
the seed task has its own 10 seeds). --flags (seqmnist, copy): further `dni run` options for every run, a
validation run of other settings: its rows are keyed and its directories named with them, and keep them as
`flags` (seqmnist: '--eval-every N' holds out the last 10,000 training images and adds `val_accuracy`).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from coordinator.lists import parse
from coordinator.plans.recurrent import service_ages
from workers.numerics.sequence_tasks import copy_steps

ROOT = Path(__file__).resolve().parents[1]
DNI = [sys.executable, "-m", "coordinator", "run", "--model", "rnn", "--no-progress"]

# The seed task: the digits 0 and 1 through 4 tanh boxes of 1 step, linear synthesizers (Adam).
SEED_TASK = ["--boxes", "4", "--steps-per-box", "1", "--cell", "tanh", "--units", "128", "--mode", "dni",
             "--lr", "1e-3", "--epochs", "3"]
SEQ_MNIST = ["--task", "seqmnist", "--boxes", "4", "--steps-per-box", "7", "--cell", "lstm", "--units", "128",
             "--lr", "1e-3", "--epochs", "10"]
COPY = ["--cell", "lstm", "--units", "64", "--batch-size", "64", "--lr", "3e-3",
        "--schedule", "constant", "--copy-batches", "100", "--epochs", "50"]
# Box length T -> the longest length the boxes are sized for: K = ceil(steps / T) = 11 boxes in each.
COPY_PLAN = {"copy": {2: 10, 4: 21}, "repeat-copy": {2: 7, 4: 14}}
MODES = {"dni": ["--mode", "dni"], "dni+aux": ["--mode", "dni", "--aux"], "truncated": ["--mode", "truncated"],
         "backprop": ["--mode", "backprop"]}   # backprop: full BPTT, the ceiling


def run(out: Path, args: list[str]) -> dict:
    """One `dni run`; its summary. Runs that exist already are read back, so a table can be resumed."""
    summary = out / "summary.json"
    if not summary.exists():
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        subprocess.run([*DNI, *args, "--out", str(out)], check=True, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    return json.loads(summary.read_text())


def seeds(a) -> dict:
    table = {}
    for task in ("mnist01", "mnist01-chunks"):
        accs = {}
        for seed in range(10):
            s = run(a.out / task / f"seed{seed}", [*SEED_TASK, *a.budget, "--task", task, "--data", a.data,
                                                   "--seed", str(seed)])
            accs[seed] = s["test_accuracy"]
            print(f"{task:15} seed {seed}  test accuracy {accs[seed]:.4f}  ({s['train_seconds']:.0f} s)", flush=True)
        worst = min(accs, key=accs.get)
        table[task] = {"accuracy": accs, "worst": accs[worst], "worst_seed": worst,
                       "median": statistics.median(accs.values()),
                       "all_at_least_99.5": all(v >= 0.995 for v in accs.values())}
    print(f"{'layout':15} {'worst (seed)':>14} {'median':>8}  all >= 99.5%")
    for task, r in table.items():
        print(f"{task:15} {r['worst']:8.4f} ({r['worst_seed']})  {r['median']:8.4f}  {r['all_at_least_99.5']}")
    return table


def delays(service: dict) -> dict:
    """The parameter service's gradient delay and read staleness, mean and most (none: untied, no service)."""
    if "pushes" not in service:
        return {}
    return {name: {"mean": round(age["mean"], 2), "max": age["max"]} for name, age in service_ages(service).items()}


def seqmnist(a) -> dict:
    """Sequential MNIST in each mode; with --flags (a validation run: '--eval-every N' holds out the split)
    the rows are keyed with them and keep each epoch's validation accuracy."""
    table = {}
    for mode in a.modes or ("dni", "cdni", "truncated", "backprop"):
        out = a.out / "".join([mode, *a.flags]).replace("--", "-")
        s = run(out, [*SEQ_MNIST, *a.budget, "--data", a.data, "--mode", mode, "--seed", str(a.seed), *a.flags])
        key = " ".join([mode, *a.flags])
        flags = {"flags": " ".join(a.flags)} if a.flags else {}
        table[key] = {"test_accuracy": s["test_accuracy"], "train_seconds": s["train_seconds"], **flags,
                      "history": [h.get("test_accuracy", h.get("val_accuracy")) for h in s["history"]],
                      **delays(s["workers"].get(str(s["boxes"] + 1), {}))}
        if "validation" in s:
            table[key]["val_accuracy"] = s["validation"][-1]["val_accuracy"]
        print(f"{key} test accuracy {s['test_accuracy']:.4f}"
              + (f"  validation {table[key]['val_accuracy']:.4f}" if "validation" in s else "")
              + f"  ({s['train_seconds']:.0f} s)", flush=True)
    return table


def late_cosines(out: Path, share: float = 0.2) -> dict[str, float]:
    """Box -> the mean cosine of its synthetic gradient to its target over the run's last `share` of records.
    At BP(1) the target is the true boundary gradient (a trip back along the boxes late)."""
    cos: dict[str, list[float]] = {}
    for line in (out / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        if "cos" in r:
            cos.setdefault(str(r["stage"]), []).append(r["cos"])
    return {box: round(statistics.fmean(v[int(len(v) * (1 - share)):]), 3) for box, v in cos.items()}


def copy(a) -> dict:
    """Copy or Repeat Copy (a.experiment): the longest length each mode solves at each T, same budget."""
    table = {}
    for T, longest in COPY_PLAN[a.experiment].items():
        if a.steps_per_box and T not in a.steps_per_box:
            continue
        boxes = -(-copy_steps(longest, 2 if a.experiment == "repeat-copy" else 0) // T)
        for mode in a.modes or MODES:
            out = a.out / "".join([f"T{T}-{mode}", *a.flags]).replace("--", "-")
            s = run(out, [*COPY, *a.budget, "--task", a.experiment, *MODES[mode], "--seed", str(a.seed),
                          "--steps-per-box", str(T), "--boxes", str(boxes), "--copy-length", str(longest), *a.flags])
            key = " ".join([f"T={T} {mode}", *a.flags])
            flags = {"flags": " ".join(a.flags)} if a.flags else {}
            table[key] = {"solved": s["copy_solved"], "boxes": boxes, **flags,
                          "lengths": [h["copy_length"] for h in s["history"]],
                          "bits": [round(h["bits"], 3) for h in s["history"]],
                          "train_seconds": round(s["train_seconds"]), "cos": late_cosines(out)}
            print(f"{key} ({boxes} boxes)  longest length solved {s['copy_solved']}  ({s['train_seconds']:.0f} s)",
                  flush=True)
    return table


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("experiment", choices=("seeds", "seqmnist", "copy", "repeat-copy"))
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "mnist"))
    p.add_argument("--out", type=Path, help="default runs/rnn-EXPERIMENT")
    p.add_argument("--quick", action="store_true", help="tiny budgets: checks the script, not the claims")
    p.add_argument("--seed", type=int, default=0, help="seqmnist and copy: the runs' seed")
    p.add_argument("--modes", type=lambda v: parse(v, "--modes", str),
                   help="seqmnist and copy: only these modes, comma-separated (copy: dni, dni+aux, truncated, "
                        "backprop)")
    p.add_argument("--steps-per-box", type=lambda v: parse(v, "--steps-per-box"),
                   help="copy: only these T, comma-separated (2, 4)")
    p.add_argument("--flags", type=str.split, default=[],
                   help="seqmnist and copy: further dni run options, as one argument: --flags='--stream --lr 1e-3'")
    a = p.parse_args()
    suffix = f"-seed{a.seed}" if a.seed else ""
    a.out = (a.out or ROOT / "runs" / f"rnn-{a.experiment}{suffix}").resolve()
    a.data = str(Path(a.data).resolve())
    a.budget = ["--epochs", "1", "--train-subset", "2000", "--copy-batches", "20"] if a.quick else []
    table = {"seeds": seeds, "seqmnist": seqmnist, "copy": copy, "repeat-copy": copy}[a.experiment](a)
    a.out.mkdir(parents=True, exist_ok=True)
    # Rows of an earlier call (other --modes or --steps-per-box) that this one did not run are kept.
    path = a.out / "table.json"
    kept = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps({**kept, **table}, indent=2) + "\n")


if __name__ == "__main__":
    main()
