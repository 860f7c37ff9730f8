"""The tables of docs/defaults.md: real multi-process `dni run`s at the defaults, one at a time.

usage: python benchmarks/defaults_tables.py depth|pipelines|harder [--quick | --epochs N] [--out runs/defaults]
  depth:  backprop, cdni and dni at 3, 4 and 6 stages (2, 3, 5 hidden layers of 256), MNIST, 20 epochs
  pipelines: backprop, gpipe and pipedream at 3 and 6 stages, MNIST, 20 epochs
  harder: backprop and cdni on the tasks `python -m coordinator.data.variants` writes (20 epochs):
          mnist-rot, mnist-pairs, mnist-back-rand, mnist-rot-back-rand
Each run is `dni run --data DIR --mode M --hidden H --epochs E --out OUT/...` and nothing else:
the defaults are what is measured. Writes OUT/<table>.json and prints a markdown table.
"""
import workers.runtime.blas as blas  # first: pins BLAS threads before numpy loads

# isort: split

import argparse
import json
import subprocess
import sys
from pathlib import Path

from coordinator.data.variants import TASKS

MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
ENV = blas.pinned()   # each run's coordinator and workers: one BLAS thread each, or DNI_BLAS_THREADS


def runs(table: str, epochs: str, out: Path, tasks: Path):
    if table in ("depth", "pipelines"):
        depths, modes = ((3, 4, 6), ("backprop", "cdni", "dni")) if table == "depth" else \
            ((3, 6), ("backprop", "gpipe", "pipedream"))
        for stages in depths:
            for mode in modes:
                yield f"{mode}-{stages}", MNIST, mode, ",".join(["256"] * (stages - 1)), epochs
    else:
        for task in TASKS:
            for mode in ("backprop", "cdni"):
                yield f"{task}-{mode}", tasks / task, mode, "256,256", epochs


def train_loss(run: Path, head: int, last: int = 100) -> float:
    """The head's training loss averaged over the run's last `last` batches (metrics.jsonl)."""
    lines = (run / "metrics.jsonl").read_text().splitlines()
    losses = [r["loss"] for r in map(json.loads, lines) if r.get("stage") == head and "loss" in r]
    return sum(losses[-last:]) / len(losses[-last:])


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("table", choices=("depth", "pipelines", "harder"))
    p.add_argument("--quick", action="store_true", help="one epoch")
    p.add_argument("--epochs", type=int, default=20, help="epochs of every run (the tables were made with 20)")
    p.add_argument("--out", default="runs/defaults")
    p.add_argument("--tasks", default="runs/tasks", help="where coordinator.data.variants wrote the harder tasks")
    a = p.parse_args()
    out = Path(a.out)
    rows = []
    for name, data, mode, hidden, epochs in runs(a.table, "1" if a.quick else str(a.epochs), out, Path(a.tasks)):
        cmd = [sys.executable, "-m", "coordinator", "run", "--data", str(data), "--mode", mode, "--hidden", hidden,
               "--epochs", epochs, "--out", str(out / name), "--no-progress"]
        print("$ dni " + " ".join(cmd[3:]), flush=True)
        if not (out / name / "summary.json").exists():   # a table resumes: finished runs are read back
            subprocess.run(["nice", "-n", "10", *cmd], env=ENV, check=True, stdout=subprocess.DEVNULL)
        s = json.loads((out / name / "summary.json").read_text())
        rows.append({"name": name, "data": str(data), "mode": mode, "stages": s["stages"], "epochs": s["epochs"],
                     "dataset": s["dataset"],
                     "test_accuracy": s["test_accuracy"], "train_loss_last100": train_loss(out / name, s["stages"]),
                     "samples_per_second": s["samples_per_second"],
                     "stage1_p50_ms": s["update_latency_ms"]["1"]["p50"], "train_seconds": s["train_seconds"],
                     "synth_cosine": s.get("synth_cosine", {})})
        r = rows[-1]
        print(f"| {name} | {mode} | {r['stages']} | {100 * r['test_accuracy']:.2f}% | {r['train_loss_last100']:.3f} | "
              f"{r['samples_per_second']:,.0f} | {r['stage1_p50_ms']:.2f} ms |", flush=True)
        (out / f"{a.table}.json").write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
