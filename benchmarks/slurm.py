"""Issue 14's figures: sbatch to the first training step at 4 nodes; one job under Slurm against `dni run`.

usage (root): .venv/bin/python benchmarks/slurm.py [--data DIR] [--mode cdni] [--hidden 256,256,256]
                                                 [--train-subset 0 (all)] [--epochs 2] [--repeat 3]

Brings up the test suite's Slurm (slurmctld and 4 slurmd, each in its own network namespace),
then --repeat times in turn: the job with `dni run` (ipc, one machine), and the same job with
`dni slurm submit --nodes 4` (the shipped script: tcp with CURVE, a stage per node, the
coordinator on the first node beside stage 4, where srun's cyclic placement puts it). Medians are
reported, so load from elsewhere hits both alike. "sbatch to training" runs from the submit
command to the coordinator's log of the last worker's registration, after which it sends the
first batch at once; the job's output file is polled every 20 ms.
"""
import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from coordinator.lists import parse

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from slurm_cluster import Cluster, wait_for  # noqa: E402  (the test suite's cluster)

sys.path.insert(0, str(ROOT / "benchmarks"))
from multihost import local_run  # noqa: E402  (the same `dni run` as issue 5's comparison)

PATH = {"PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}  # `dni` for the job script


def slurm_run(cluster: Cluster, job: list[str], work: Path, stages: int) -> tuple[dict, float]:
    log, run = work / "job.out", work / "run"
    started = time.monotonic()
    job_id = cluster.submit(work, f"--sbatch=--output={log}", "--nodes", "4", *job, "--out", str(run), env=PATH)
    text = lambda: log.read_text() if log.exists() else ""  # noqa: E731
    launched = wait_for(lambda: "task 0 on" in text(), 120, every=0.02) and time.monotonic() - started
    if not wait_for(lambda: text().count("registered stage") == stages, 120, every=0.02):
        raise SystemExit(f"job {job_id} did not start training:\n{text()}{cluster.logs()}")
    to_training = time.monotonic() - started
    print(f"  job {job_id}: srun's task 0 after {launched:.2f} s, training after {to_training:.2f} s", flush=True)
    wait_for(lambda: cluster.ended(job_id), 1800, every=0.5)
    if not (run / "summary.json").exists():
        raise SystemExit(f"job {job_id} failed:\n{text()}")
    return json.loads((run / "summary.json").read_text()), to_training


def row(name: str, runs: list[dict]) -> str:
    med = lambda f: statistics.median(f(s) for s in runs)  # noqa: E731
    return (f"| {name} | {med(lambda s: s['samples_per_second']):,.0f} "
            f"| {med(lambda s: s['update_latency_ms']['1']['p50']):.2f} "
            f"| {med(lambda s: s['update_latency_ms']['1']['p99']):.2f} "
            f"| {med(lambda s: s['test_accuracy']):.4f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    options = {"data": str(ROOT.parent / "shared" / "data" / "mnist"), "mode": "cdni", "hidden": "256,256,256",
               "train-subset": "0", "epochs": "2"}   # passed on to dni as given
    for name, default in options.items():
        p.add_argument(f"--{name}", default=default)
    p.add_argument("--repeat", type=int, default=3)
    a = p.parse_args()
    job = [arg for name in options for arg in (f"--{name}", getattr(a, name.replace("-", "_")))]
    job += ["--no-progress", "--checkpoint-every", "0"]
    stages = len(parse(a.hidden, "--hidden")) + 1
    local, slurm, starts = [], [], []
    with tempfile.TemporaryDirectory(prefix="dni-slurm-bench-") as tmp, Cluster(4, Path(tmp) / "cluster") as cluster:
        for i in range(a.repeat):
            local.append(local_run(job, Path(tmp) / f"local{i}"))
            (work := Path(tmp) / f"slurm{i}").mkdir()
            summary, to_training = slurm_run(cluster, job, work, stages)
            slurm.append(summary)
            starts.append(to_training)
            print(f"round {i + 1}: sbatch to training {to_training:.2f} s; samples/s local "
                  f"{local[-1]['samples_per_second']:,.0f}, slurm {summary['samples_per_second']:,.0f}", flush=True)
    examples = "all" if a.train_subset == "0" else a.train_subset
    print(f"\n{a.mode} {a.hidden}, {examples} training examples x {a.epochs} epochs, medians of {a.repeat}\n")
    print("| run | samples/s | stage 1 update p50 ms | p99 ms | test accuracy |\n| --- | --- | --- | --- | --- |")
    print(row("`dni run` (ipc, 1 host)", local))
    print(row("Slurm, 4 nodes (tcp + CURVE)", slurm))
    print(f"\nsbatch to first training step at 4 nodes: median {statistics.median(starts):.2f} s "
          f"(runs: {', '.join(f'{s:.2f}' for s in starts)})")


if __name__ == "__main__":
    main()
