"""Issue 12's figures: accuracy with 3 random SIGKILLs against none, time to train again, work lost, checkpoint cost.

usage: nice .venv/bin/python benchmarks/chaos.py [--data DIR] [--modes cdni,dni] [--hidden 256,256]
                                                 [--epochs 20] [--kills 3] [--seed 0]

Per mode, three `dni run`s of the same job (flags beyond these are the mode's defaults):
  end-only   checkpoints only at the end (--checkpoint-every 0 --checkpoint-seconds 0): samples/s
  default    the default cadence (every 1000 steps or 30 s of training): samples/s and accuracy
  chaos      the default cadence and --max-restarts K; K times, at a seeded random step between 5%
             and 90% of the run (once the restart before it is training again), a seeded random
             worker gets SIGKILL. Time to train again runs from the kill to the
             coordinator's "training again" line; work lost is the step the loss was noticed at
             less the step of the checkpoint every stage went back to.
A Markdown table goes to standard output; the raw figures to --json.
"""
import argparse
import json
import os
import platform
import random
import re
import signal
import statistics
import sys
import time
from pathlib import Path

from coordinator.lists import parse

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("DNI_TEST_TAG", f"dni-chaos-{os.getpid()}")   # resumable.py finds workers by it
from resumable import Watched, stage_pid, steps_logged, summary, wait_until  # noqa: E402

LOST = re.compile(r"restart \d+ of \d+: every stage goes back from step (\d+) "
                  r"to (?:the checkpoint at step (\d+)|the start)")


def chaos(job: list[str], out: Path, kills: int, steps: int, rng: random.Random) -> dict:
    run = Watched(out, *job, "--max-restarts", str(kills))
    to_training = []
    for n, moment in enumerate(sorted(int(rng.uniform(0.05, 0.9) * steps) for _ in range(kills)), start=1):
        wait_until(lambda: steps_logged(out) >= moment, 3600, f"step {moment}", run.proc)
        victim = rng.randint(1, len(parse(job[job.index("--hidden") + 1], "--hidden")) + 1)
        os.kill(stage_pid(victim), signal.SIGKILL)
        killed = time.monotonic()
        wait_until(lambda: run.saw(f"restart {n}: training again"), 120, f"restart {n}", run.proc)
        to_training.append(time.monotonic() - killed)
    if run.wait(3600) != 0:
        raise SystemExit(f"the chaos run failed:\n{run.text}")
    lost = [int(m[1]) - int(m[2] or 0) for m in LOST.finditer(run.text)]
    return {"summary": summary(out), "to_training_s": to_training, "steps_lost": lost}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "mnist"))
    p.add_argument("--modes", default="cdni,dni")
    p.add_argument("--hidden", default="256,256")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--kills", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/chaos", help="directory for the runs")
    p.add_argument("--json", help="write the raw figures here")
    args = p.parse_args()
    rng, base, figures = random.Random(args.seed), Path(args.out), {}
    print(f"# {platform.node()}, {os.cpu_count()} cores, epochs {args.epochs}, kills {args.kills}, seed {args.seed}",
          flush=True)
    for mode in parse(args.modes, "--modes", str):
        job = ["--data", args.data, "--mode", mode, "--hidden", args.hidden, "--epochs", str(args.epochs)]
        end = Watched(base / f"{mode}-end-only", *job, "--checkpoint-every", "0", "--checkpoint-seconds", "0")
        default = end.wait(3600) == 0 and Watched(base / f"{mode}-default", *job)
        if not default or default.wait(3600) != 0:
            raise SystemExit(f"an undisturbed {mode} run failed")
        quiet, plain = summary(base / f"{mode}-default"), summary(base / f"{mode}-end-only")
        hit = chaos(job, base / f"{mode}-chaos", args.kills, quiet["steps"], rng)
        figures[mode] = {"end_only": plain, "default": quiet, **hit}
        print(f"{mode}: undisturbed {quiet['test_accuracy']:.4f}, {args.kills} kills "
              f"{hit['summary']['test_accuracy']:.4f}; to training {hit['to_training_s']}; lost {hit['steps_lost']}",
              flush=True)
    print("\n| mode | accuracy undisturbed | with kills | median kill to training again | steps lost per restart "
          "| samples/s, checkpoints at the end only | at the default cadence "
          "| its checkpoints: count, share of training time |")
    print("| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: |")
    for mode, f in figures.items():
        d = f["default"]
        print(f"| {mode} | {d['test_accuracy']:.4f} | {f['summary']['test_accuracy']:.4f} "
              f"| {statistics.median(f['to_training_s']):.2f} s | {', '.join(map(str, f['steps_lost']))} "
              f"| {f['end_only']['samples_per_second']:,.0f} | {d['samples_per_second']:,.0f} "
              f"| {d['checkpoints']}, {d['checkpoint_seconds'] / d['train_seconds']:.2%} |")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2, default=str))


if __name__ == "__main__":
    main()
