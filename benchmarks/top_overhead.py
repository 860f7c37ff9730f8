"""What watching a run costs it: samples/s with `dni top` watching against without, and the coordinator's CPU.

usage: python benchmarks/top_overhead.py --data ../shared/data/mnist [--rounds 3] [--epochs 2] [--before DIR]
  Each round runs the 3-stage MNIST job (`dni run --data DIR --epochs E`, cdni 256,256) once unwatched and once
  with `dni top` drawing its live view in a pseudo-terminal (script(1)), in turn, so that both see the same load;
  each round starts with the variant after the one the round before started with.
  --before DIR: a checkout of dni from before the status file (`git archive`), run a third time each round:
  the coordinator's CPU without the status file. Prints one JSON object: every run, and the medians.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of the process itself (its children, the workers, apart); None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / TICK


def one(code: Path, data: str, epochs: int, out: Path, watched: bool) -> dict:
    """One run of the job with `code` on the path; its samples/s, and its coordinator's CPU per wall second."""
    env = {**os.environ, "PYTHONPATH": str(code)}
    cmd = [sys.executable, "-m", "coordinator", "run", "--data", data, "--epochs", str(epochs), "--out", str(out),
           "--no-progress"]
    t0 = time.monotonic()
    run = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = [0.0, t0]   # the coordinator's CPU seconds and the time, last seen alive

    def sample():
        while (cpu := cpu_seconds(run.pid)) is not None and run.poll() is None:
            last[:] = cpu, time.monotonic()
            time.sleep(0.1)
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    watcher = None
    if watched:
        while not (out / "status.json").exists() and run.poll() is None:
            time.sleep(0.05)
        top = f"{sys.executable} -m coordinator top {out}"
        watcher = subprocess.Popen(["script", "-qfc", top, "/dev/null"], env={**env, "COLUMNS": "140"},
                                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if run.wait() != 0:
        raise SystemExit(f"{' '.join(cmd)} failed")
    sampler.join()
    if watcher is not None:
        watcher.wait(30)   # it ends by itself once the run has
    summary = json.loads((out / "summary.json").read_text())
    return {"samples_per_second": summary["samples_per_second"], "train_seconds": summary["train_seconds"],
            "coordinator_cpu_per_s": last[0] / (last[1] - t0), "wall_seconds": last[1] - t0}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--before", type=Path, help="a checkout of dni without the status file")
    args = p.parse_args()
    variants = {"unwatched": (ROOT, False), "watched": (ROOT, True)}
    if args.before:
        variants["before"] = (args.before.resolve(), False)
    runs = {name: [] for name in variants}
    with tempfile.TemporaryDirectory(prefix="dni-top-cost-") as tmp:
        names = list(variants)
        for r in range(args.rounds):
            for name in names[r % len(names):] + names[:r % len(names)]:   # each round starts with the next
                code, watched = variants[name]
                got = one(code, args.data, args.epochs, Path(tmp) / f"{name}-{r}", watched)
                runs[name].append(got)
                print(f"round {r + 1} {name}: {got}", file=sys.stderr, flush=True)
    medians = {name: {k: statistics.median(run[k] for run in got) for k in got[0]} for name, got in runs.items()}
    print(json.dumps({"epochs": args.epochs, "rounds": args.rounds, "runs": runs, "median": medians}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
