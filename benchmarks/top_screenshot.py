"""The screenshot of `dni top` in the docs: a real 4-stage MNIST job with one stage slowed, as a slow host.

usage: python benchmarks/top_screenshot.py --data ../shared/data/mnist [--slow-stage 3] [--slow-share 0.04]
                                           [--out docs/top.svg]     (as root: a cgroup)
  Starts `dni run --hidden 256,256,256` (cdni) and, once it trains, moves the slow stage's worker into a
  cgroup that gives it --slow-share of a core (the network lab's slow host: coordinator/bench/netlab/shaping.py);
  once the status file's rates cover only the time since, renders dni top's live view as SVG (rich's own
  export), stops the run, and says which stage dni top marked. Convert to PNG with cairosvg or a browser (the
  SVG asks for the Fira Code web font: without network, name an installed monospace font in its place).
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console

from coordinator.bench.netlab import shaping
from coordinator.status import RATE_S
from coordinator.top import live, snapshot, view

# The lab's period (5 ms) allows shares of 0.2 core and more (the kernel's least quota is 1 ms); a stage of
# this job takes about 0.1 core on a shared machine, so a share that slows it needs a longer period.
shaping.PERIOD_US = 100_000


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True)
    p.add_argument("--slow-stage", type=int, default=3)
    p.add_argument("--slow-share", type=float, default=0.04, help="of one core (a stage takes some 0.1 here)")
    p.add_argument("--out", type=Path, default=Path("docs/top.svg"))
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="dni-top-shot-") as tmp:
        run_dir = Path(tmp) / "cdni-4-stages"
        quota = shaping.CpuQuota(f"dni-top-shot-{os.getpid()}", args.slow_share)
        run = subprocess.Popen([sys.executable, "-m", "coordinator", "run", "--data", args.data, "--hidden",
                                "256,256,256", "--epochs", "20", "--out", str(run_dir), "--no-progress"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            status = run_dir / "status.json"
            while not (status.exists() and json.loads(status.read_text())["state"] == "training"):
                time.sleep(0.2)
            quota.add(json.loads(status.read_text())["stages"][args.slow_stage - 1]["pid"])
            time.sleep(3 * RATE_S)   # every rate in the status file is of the slowed job by then
            snap = snapshot.read(run_dir)
        finally:
            run.send_signal(signal.SIGTERM)
            run.wait()
            quota.remove()
    console = Console(record=True, width=132, file=open(os.devnull, "w"))
    console.print(live.renderable(snap))
    console.save_svg(str(args.out), title=f"dni top: stage {args.slow_stage} given {args.slow_share:g} of a core")
    print(f"stage {args.slow_stage} slowed; dni top marked stage {view.bottleneck(snap)}; wrote {args.out}")
    print(view.plain(snap))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
