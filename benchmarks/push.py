"""Issue 23's figures: the tied weights' traffic and a time box's update latency on sequential MNIST (4 LSTM boxes).

usage: python benchmarks/push.py local|network [--out DIR] [--data DIR] [--mode M] [--epochs N] [--train-subset N]
  local    one `dni run`: messages per training batch, a box's update latency p50/p99, samples/s, accuracy
  network  the same job in the network lab (root: namespaces as hosts), at --delays ms per link, one after another
Run it from two checkouts (before and after a change) one after the other, on the same machine state:
only figures measured side by side carry weight on a shared machine. The table is printed and
written as DIR/table.json; every run's directory stays under --out.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import workers.runtime.blas  # noqa: F401  (first: pins BLAS threads before numpy loads)
from coordinator.lists import parse

ROOT = Path(__file__).resolve().parents[1]
K = 4
SEQ_MNIST = ["--model", "rnn", "--task", "seqmnist", "--boxes", str(K), "--steps-per-box", "7", "--cell", "lstm",
             "--units", "128", "--lr", "1e-3"]


def messages_per_batch(s: dict) -> dict:
    """Training messages per batch, from the counters: the pipeline's (K slices, K-1 states forward, K-1
    targets back, one DONE) and the parameter service's (pulls, its answers, gradient pushes). The
    evaluations' pulls are in too (a pull a box and evaluation batch)."""
    boxes = [s["workers"][str(j)] for j in range(1, K + 1)]
    service = s["workers"][str(K + 1)]
    pipeline = K + 2 * (K - 1) + 1 if s["mode"] in ("dni", "cdni", "backprop") else K + (K - 1) + 1
    answers = service.get("answers", service["pulls"])   # before issue 23, every PARAMS answered a pull
    traffic = {"pull": sum(b["pulls"] for b in boxes), "params": answers, "push": service["pushes"]}
    per_batch = {k: v / s["steps"] for k, v in traffic.items()}
    return {"pipeline": pipeline, **per_batch, "total": pipeline + sum(per_batch.values())}


def blocked_ms(s: dict) -> dict:
    """Per box, the ms a batch it waited for the parameter service (or, in backprop, for its gradient too)."""
    return {str(j): s["workers"][str(j)]["time_s"]["blocked"] * 1e3 / s["steps"] for j in range(1, K + 1)}


def figures(s: dict) -> dict:
    service = s["workers"][str(K + 1)]
    return {"test_accuracy": s["test_accuracy"], "samples_per_second": s["samples_per_second"],
            "train_seconds": s["train_seconds"], "update_latency_ms": s["update_latency_ms"],
            "blocked_ms_per_batch": blocked_ms(s), "messages_per_batch": messages_per_batch(s),
            "service": {k: service.get(k) for k in ("pulls", "answers", "transfers", "max_read_staleness",
                                                    "max_grad_delay", "bound")}}


def local_rows(push: dict, ms, pct) -> list[list[str]]:
    """docs/results/push.json's local runs as the results page's rows (per box 1 / 2 / 3 / 4), design by design."""
    def boxes(values) -> str:
        return " / ".join(ms(v) for v in values)

    return [[f"{side}: {run}", f"{r['messages_per_batch']['total']:.1f}",
             f"{r['messages_per_batch']['pull'] + r['messages_per_batch']['params']:.1f}",
             *(boxes([v[q] for v in r["update_latency_ms"].values()]) for q in ("p50", "p99")),
             boxes(r["blocked_ms_per_batch"].values()), f"{r['samples_per_second']:,.0f}", pct(r["test_accuracy"])]
            for side, runs in push["local"].items() for run, r in runs.items()]


def network_rows(push: dict, ms) -> tuple[list[float], list[list[str]]]:
    """push.json's lab runs: per round and side, over the 4 boxes, the mean p50 (and wait) at each delay, and
    the p50 at the longest delay against none. Returns (the delays, the rows)."""
    def mean(r: dict, key: str) -> float:
        return sum(v["p50"] if key == "latency_ms" else v for v in r[key].values()) / K

    net = {(side, key.rsplit(" ", 1)[1], r["delay_ms"]): r for side, runs in push["network"].items()
           for key, r in runs.items()}
    delays = sorted({k[2] for k in net})
    # The rounds in number order (r10 after r9), a round's sides in the file's order (before, then after).
    sides = list(push["network"])
    rounds = sorted({(rnd, side) for side, rnd, _ in net}, key=lambda r: (int(r[0][1:]), sides.index(r[1])))
    return delays, [[f"{side} ({rnd})", *(f"{ms(mean(net[side, rnd, d], 'latency_ms'))} "
                                          f"({ms(mean(net[side, rnd, d], 'blocked_ms_per_batch'))})" for d in delays),
                     f"{mean(net[side, rnd, delays[-1]], 'latency_ms') / mean(net[side, rnd, 0.0], 'latency_ms'):.2f}x"]
                    for rnd, side in rounds]


def local(a) -> dict:
    out = a.out / f"{a.mode}-seed{a.seed}"
    if not (out / "summary.json").exists():
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        subprocess.run([sys.executable, "-m", "coordinator", "run", *SEQ_MNIST, *a.job, "--no-progress",
                        "--out", str(out)], check=True, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    return {f"{a.mode} seed {a.seed}": figures(json.loads((out / "summary.json").read_text()))}


def network(a) -> dict:
    from coordinator.bench.netlab import job, runs, shaping
    why = runs.refusal()
    if why:
        raise SystemExit(f"dni: error: {why}")
    has_netem, _ = shaping.netem()
    # The lab's job names the mode, epochs and seed itself; the network is the time boxes.
    p = {"width": 128, "batch": 128, "epochs": a.epochs, "seed": a.seed, "warmup": 20, "shape": SEQ_MNIST,
         "job": ["--data", a.data, "--train-subset", str(a.train_subset)]}
    table = {}
    a.out.mkdir(parents=True, exist_ok=True)
    for delay in a.delays:
        s = job.Setting(a.mode, K + 1, delay, 2)   # the hosts: K boxes and the parameter service
        r = job.run(s, p, None, a.out / s.tag(), has_netem)
        run = json.loads((a.out / s.tag() / "summary.json").read_text())
        table[f"{a.mode} {delay:g} ms"] = {"delay_ms": delay, "delay_by": r["delay_by"],
                                           "blocked_ms_per_batch": blocked_ms(run),
                                           "messages_per_batch": messages_per_batch(run),
                                           "samples_per_second": r["samples_per_second"],
                                           "test_accuracy": r["test_accuracy"], "latency_ms": r["latency_ms"],
                                           "link_rtt_ms": [x["rtt_ms"]["p50"] for x in r["links"]]}
        lat = r["latency_ms"]
        print(f"{delay:5g} ms  box update latency p50 " + " ".join(f"{lat[str(j)]['p50']:.1f}" for j in
              range(1, K + 1)) + f" ms  {r['samples_per_second']:.0f} samples/s", flush=True)
    return table


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("experiment", choices=("local", "network"))
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "mnist"))
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--mode", default="dni", choices=("dni", "cdni", "backprop", "truncated"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--train-subset", type=int, default=0, help="train on the first N examples only (0: all)")
    p.add_argument("--delays", type=lambda v: parse(v, "--delays", float, low=0), default=[0.0, 5.0, 20.0])
    a = p.parse_args()
    if len(set(a.delays)) < len(a.delays):   # a job's directory is named by its delay
        p.error("--delays: each delay once; run another round into another --out")
    a.out, a.data = a.out.resolve(), str(Path(a.data).resolve())
    a.job = ["--epochs", str(a.epochs), "--data", a.data, "--mode", a.mode, "--seed", str(a.seed),
             "--train-subset", str(a.train_subset)]
    table = {"local": local, "network": network}[a.experiment](a)
    print(json.dumps(table, indent=2))
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "table.json").write_text(json.dumps(table, indent=2) + "\n")


if __name__ == "__main__":
    main()
