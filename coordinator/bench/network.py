"""`dni bench network`: its options, and the checks made before any namespace is created."""
from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from coordinator.bench.netlab import runs, shaping
from coordinator.config import Config
from coordinator.lists import parse


def add_parser(kinds) -> argparse.ArgumentParser:
    net = kinds.add_parser("network", help="dni, cdni, backprop, gpipe, pipedream across namespaces as hosts: "
                           "link delay, bandwidth, a slow host (needs root)",
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    net.add_argument("--delays", default="0,1,5,20", help="one-way delay per link, ms")
    net.add_argument("--stages", default="3,4", help="stages per network (2 is always added: the projection's check)")
    net.add_argument("--modes", default="dni,cdni,backprop", help="modes to run")
    net.add_argument("--credits", default=Config.credit,
                     help="credit schemes to run every job with, side by side: link, coordinator "
                     "(see dni run --credit)")
    net.add_argument("--window", type=int, default=2, help="batches in flight (credit) of the main sweep")
    net.add_argument("--windows", default="1,4,8,16",
                     help="more windows for dni and cdni at --focus-stages: accuracy and samples/s against window")
    net.add_argument("--window-delays", default="0,5,20", help="the delays of those window runs")
    net.add_argument("--throughput-window", type=int, default=8,
                     help="the window of dni's throughput runs at every depth and delay")
    net.add_argument("--focus-stages", type=int, default=3,
                     help="depth of the window, slow-host, bandwidth and coordinator-hop runs")
    net.add_argument("--bandwidth", help="also run with every link shaped to this rate (tc HTB), e.g. 100mbit")
    net.add_argument("--slow-stage", type=int, default=0, help="also run with this stage's host slowed (0: none)")
    net.add_argument("--slow-share", type=float, default=0.25, help="cores the slow host gets (CFS quota)")
    net.add_argument("--epochs", type=int, default=2, help="the fixed budget: epochs of every job")
    net.add_argument("--width", type=int, default=256, help="hidden layer width")
    net.add_argument("--batch", type=int, default=128, help="batch size")
    net.add_argument("--micro-batches", type=int, default=Config.micro_batches, help="gpipe's micro-batches a batch")
    net.add_argument("--warmup", type=int, default=50, help="first steps left out of latency and staleness figures")
    net.add_argument("--data", help="MNIST directory (default: the generated task)")
    net.add_argument("--insecure", action="store_true", help="no CURVE (default: every socket encrypted)")
    net.add_argument("--keep", metavar="DIR", help="keep every job's run directory and logs here (made if need "
                     "be; without it only a failed job's are kept, in a directory named at the end)")
    return net


def params(args) -> dict:
    stages = sorted(set(parse(args.stages, "--stages", low=2)) | {2})
    modes = parse(args.modes, "--modes", str, choices=runs.MODES)
    credits = list(dict.fromkeys(parse(args.credits, "--credits", str, choices=("link", "coordinator"))))
    if args.focus_stages not in stages:
        stages = sorted(set(stages) | {args.focus_stages})
    if args.slow_stage and not 1 <= args.slow_stage <= args.focus_stages:
        raise ValueError(f"--slow-stage {args.slow_stage}: the slow-host runs have {args.focus_stages} stages")
    if args.bandwidth:
        shaping.rate_bits(args.bandwidth)
    if min(args.window, args.throughput_window, args.epochs, args.width, args.batch, args.micro_batches) < 1 \
            or args.warmup < 0:
        raise ValueError("--window, --throughput-window, --epochs, --width, --batch, --micro-batches must be positive")
    return {"delays": sorted(set(parse(args.delays, "--delays", float, low=0)) | {0.0}), "stages": stages,
            "modes": modes, "credits": credits, "window": args.window,
            "windows": parse(args.windows, "--windows", low=1),
            "window_delays": parse(args.window_delays, "--window-delays", float, low=0),
            "throughput_window": args.throughput_window, "focus_stages": args.focus_stages,
            "bandwidth": args.bandwidth, "slow_stage": args.slow_stage, "slow_share": args.slow_share,
            "epochs": args.epochs, "width": args.width, "batch": args.batch, "micro_batches": args.micro_batches,
            "warmup": args.warmup, "data": args.data, "insecure": args.insecure, "seed": args.seed,
            "runs_dir": args.keep, "job": ["--batch-size", str(args.batch), "--micro-batches", str(args.micro_batches),
                                           *(["--data", args.data] if args.data else [])]}


def run(args) -> dict | None:
    why = runs.refusal()
    if why:
        print(f"dni: error: {why}", file=sys.stderr)
        return None
    p = params(args)
    if p["runs_dir"]:
        try:
            Path(p["runs_dir"]).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            print(f"dni: error: --keep {p['runs_dir']}: {exc.strerror or exc}", file=sys.stderr)
            return None
    # A polite kill (SIGTERM) unwinds like Ctrl-C, so namespaces, relays and cgroups are removed.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    return runs.run(p)
