"""The complete unlock's figures (issue 22): real multi-process `dni run`s on MNIST, one at a time.

usage: python benchmarks/unlock.py accuracy|pupdate|cost|plot [--epochs E] [--most-epochs N] [--out runs/unlock]
  accuracy: backprop, cdni and cdni --synthetic-inputs at 3 and 4 stages, E epochs (20: the defaults' figure);
            also each run's samples/s and bytes per batch (what the workers sent, and the coordinator's feeds)
  pupdate:  cdni with and without --synthetic-inputs at --p-update 1, 0.5, 0.2, 0.05 (3 stages), for E epochs
            (the same batches) and E/p epochs (1/p times the batches)
  cost:     cdni without and with --synthetic-inputs (3 stages, E epochs), alternating, three times each
  plot:     docs/unlock-pupdate.png from OUT/unlock.json (the paper's p_update figure)
Every run is `dni run --data DIR --mode M [--synthetic-inputs] [--p-update P] --epochs E --out OUT/NAME`, the
rest at the defaults. Each command adds its rows to OUT/unlock.json (a finished run is read back, not run again);
copy it to docs/results/unlock.json and run benchmarks/results_page.py.
"""
import workers.runtime.blas as blas  # first: pins BLAS threads before numpy loads

# isort: split

import argparse
import json
import subprocess
import sys
from pathlib import Path

MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
ENV = blas.pinned()   # each run's coordinator and workers: one BLAS thread each, or DNI_BLAS_THREADS
P_UPDATES = (1.0, 0.5, 0.2, 0.05)
PIXELS, LABEL, FLOAT = 784, 8, 4   # bytes of an example's network input (uint8), its label (int64), a float32


def accuracy_runs(epochs: int, most: int):
    for stages in (3, 4):
        for mode, unlock in (("backprop", False), ("cdni", False), ("cdni", True)):
            yield f"{mode}{'-si' if unlock else ''}-{stages}", stages, mode, unlock, 1.0, epochs


def pupdate_runs(epochs: int, most: int):
    """The sweep's runs; those of more than `most` epochs are left out (said on stdout)."""
    for unlock in (False, True):
        for p in P_UPDATES:
            for scaled in (False, True) if p < 1 else (False,):
                e = round(epochs / p) if scaled else epochs
                name = f"cdni{'-si' if unlock else ''}-p{p:g}-e{e}"
                if e > most:
                    print(f"left out: {name} ({e} epochs, more than --most-epochs {most})", flush=True)
                    continue
                yield name, 3, "cdni", unlock, p, e


def cost_runs(epochs: int, most: int):
    """cdni without and with --synthetic-inputs, alternating, three times: ratios of neighbours are what count
    on a shared machine."""
    for turn in (1, 2, 3):
        for unlock in (False, True):
            yield f"cost{turn}-cdni{'-si' if unlock else ''}", 3, "cdni", unlock, 1.0, epochs


RUNS = {"accuracy": accuracy_runs, "pupdate": pupdate_runs, "cost": cost_runs}


def feed_bytes(s: dict) -> float:
    """The coordinator's feeds of a training batch: stage 1's FORWARD (float32), and with --synthetic-inputs an INPUT
    (uint8 pixels) to every stage above the first; labels with each."""
    batch = s["batch_size"]
    stage1 = batch * (PIXELS * FLOAT + LABEL)
    return stage1 + (s["stages"] - 1) * batch * (PIXELS + LABEL) * bool(s.get("synthetic_inputs"))


def row(name: str, stages: int, mode: str, unlock: bool, p: float, epochs: int, run: Path) -> dict:
    s = json.loads((run / "summary.json").read_text())
    sent = sum(sum(w.get("bytes_sent", {}).values()) for w in s["workers"].values())
    return {"name": name, "stages": stages, "mode": mode, "synthetic_inputs": unlock, "p_update": p,
            "epochs": epochs, "steps": s["steps"], "test_accuracy": s["test_accuracy"],
            "samples_per_second": s["samples_per_second"], "bytes_per_batch": (sent / s["steps"]) + feed_bytes(s),
            "updates": {k: w.get("updates") for k, w in s["workers"].items()},
            "synthetic_updates": {k: w["synthetic_updates"] for k, w in s["workers"].items()
                                  if "synthetic_updates" in w}}


def measure(table: str, epochs: int, most: int, out: Path) -> int:
    path = out / "unlock.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    rows = []
    for name, stages, mode, unlock, p, e in RUNS[table](epochs, most):
        cmd = [sys.executable, "-m", "coordinator", "run", "--data", str(MNIST), "--mode", mode,
               "--hidden", ",".join(["256"] * (stages - 1)), "--epochs", str(e), "--out", str(out / name),
               "--no-progress", *(["--synthetic-inputs"] if unlock else []), *(["--p-update", str(p)] if p < 1 else [])]
        print("$ dni " + " ".join(cmd[3:]), flush=True)
        if not (out / name / "summary.json").exists():
            subprocess.run(["nice", "-n", "10", *cmd], env=ENV, check=True, stdout=subprocess.DEVNULL)
        rows.append(row(name, stages, mode, unlock, p, e, out / name))
        r = rows[-1]
        print(f"| {name} | {100 * r['test_accuracy']:.2f}% | {r['samples_per_second']:,.0f} samples/s | "
              f"{r['bytes_per_batch'] / 1024:,.0f} KiB/batch |", flush=True)
        results[table] = rows
        path.write_text(json.dumps(results, indent=1) + "\n")
    return 0


def plot(out: Path, png: Path) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = json.loads((out / "unlock.json").read_text())["pupdate"]
    base = min(r["epochs"] for r in rows)
    fig, ax = plt.subplots(figsize=(6, 4))
    for unlock, colour in ((False, "tab:blue"), (True, "tab:orange")):
        for scaled, style in ((False, "--"), (True, "-")):
            pts = sorted((r["p_update"], r["test_accuracy"]) for r in rows if r["synthetic_inputs"] == unlock
                         and (r["p_update"] == 1 or (r["epochs"] > base) == scaled))
            label = f"cdni{' + synthetic inputs' if unlock else ''}, {'1/p x the' if scaled else 'same'} batches"
            ax.plot([p for p, _ in pts], [100 * a for _, a in pts], style, marker="o", color=colour, label=label)
    ax.set_xscale("log")
    ax.set_xticks(P_UPDATES, [f"{p:g}" for p in P_UPDATES])
    ax.set_xlabel("p_update (each stage updates on a batch with this probability)")
    ax.set_ylabel("MNIST test accuracy (%)")
    ax.set_title(f"Random update schedules, 3 stages ({base} epoch{'s' if base > 1 else ''} at p = 1)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    print(f"wrote {png}")
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("table", choices=(*RUNS, "plot"))
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--most-epochs", type=int, default=1000, help="leave out the sweep's runs longer than this")
    p.add_argument("--out", default="runs/unlock")
    p.add_argument("--png", default=str(Path(__file__).resolve().parents[1] / "docs" / "unlock-pupdate.png"))
    a = p.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    return plot(out, Path(a.png)) if a.table == "plot" else measure(a.table, a.epochs, a.most_epochs, out)


if __name__ == "__main__":
    sys.exit(main())
