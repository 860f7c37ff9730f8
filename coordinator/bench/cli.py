"""`dni bench latency|transport|network|race|stall|fuzz|sweep`: options, JSON and plot output."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from coordinator import lists
from coordinator.config import Config


def add_parser(sub) -> None:
    bench = sub.add_parser("bench", help="benchmarks: update latency against depth, transport overhead, link delay")
    kinds = bench.add_subparsers(dest="bench", required=True)
    lat = kinds.add_parser("latency", help="update latency, samples/s and time breakdown: dni vs backprop by depth",
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    lat.add_argument("--depths", default="2,4,8", help="stages per network (hidden layers + head)")
    lat.add_argument("--width", type=int, default=256, help="input and hidden layer width")
    lat.add_argument("--batch", type=int, default=128, help="batch size")
    lat.add_argument("--steps", type=int, default=600, help="training batches per run")
    lat.add_argument("--warmup", type=int, default=50, help="first batches left out of the latency figures")
    lat.add_argument("--window", type=int, default=Config.window, help="batches in flight at most (credit), "
                     "as `dni run --window`")
    lat.add_argument("--throughput-depth", type=int, default=3,
                     help="stages of the dni run set against the 2-core ideal")
    lat.add_argument("--repeats", type=int, default=3,
                     help="(serial, pipeline) pairs for the throughput figure; the median pair is reported")
    lat.add_argument("--conv", default="", help="conv stages' filters, as `dni run --conv`: the net is then these, "
                     "one dense stage of --width and the head (--depths and --throughput-depth do not apply)")
    lat.add_argument("--data", default="", help="MNIST directory, for --conv")
    tr = kinds.add_parser("transport", help="the project's messages against raw pyzmq zero-copy, one hop",
                          formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    tr.add_argument("--sizes", default="4,16,64,128,256,1024,4096", help="message sizes in KiB")
    tr.add_argument("--transports", default="ipc,tcp", help="ipc and/or tcp (loopback)")
    tr.add_argument("--round-trips", type=int, default=2000,
                    help="round trips per size and path (fewer for big messages)")
    tr.add_argument("--stream", type=int, default=4000, help="messages streamed per size and path (fewer for big ones)")
    fz = kinds.add_parser("fuzz", help="random contents under valid headers, to every socket of a running job",
                          formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    fz.add_argument("--messages", type=int, default=100_000, help="messages per socket")
    fz.add_argument("--out", default="runs/fuzz", help="where the two jobs (undisturbed, fuzzed) write their runs")
    fz.add_argument("--job", default="--hidden 64,64 --epochs 10 --seed 0 --heartbeat 0.5",
                    help="the `dni run` options of both jobs (feed-forward or --model rnn); exit 1 on a crash or hang")
    from coordinator.bench import network, race, stall
    net = network.add_parser(kinds)
    rc = race.add_parser(kinds)
    st = stall.add_parser(kinds)
    sw = kinds.add_parser("sweep", help="choose defaults: a grid of runs in one process, scored on a validation split",
                          formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    from coordinator.bench.defaults import sweep
    sweep.add_arguments(sw)
    sw.set_defaults(func=sweep.run)
    for p in (lat, tr, fz, net, rc, st):
        p.add_argument("--seed", type=int, default=0, help="seed")
        p.add_argument("--json", metavar="FILE", help="write every figure to FILE")
        p.add_argument("--plot", metavar="FILE.png", help="draw the figures (needs the plot extra: matplotlib)")
    bench.set_defaults(func=cmd_bench)


def cmd_bench(args) -> int:
    if args.plot:
        from coordinator.bench import plot
        try:
            plot.require()   # before minutes of measuring, not after
        except ImportError as exc:
            print(f"dni: error: {exc}", file=sys.stderr)
            return 2
    if args.bench == "fuzz":
        from coordinator.bench import fuzz
        result = fuzz.run(Path(args.out), args.job.split(), args.messages, args.seed)
        print(fuzz.report(result))
    elif args.bench == "network":
        from coordinator.bench import network
        result = network.run(args)
        if result is None:
            return 2
    elif args.bench == "race":
        from coordinator.bench import race
        result = race.run(args)
        if result is None:
            return 2
    elif args.bench == "stall":
        from coordinator.bench import stall
        result = stall.run(args)
    elif args.bench == "latency":
        from coordinator.bench import latency
        depths = lists.parse(args.depths, "--depths", low=1, required=True)
        result = latency.run(depths=depths, width=args.width, batch=args.batch, steps=args.steps,
                             warmup=args.warmup, window=args.window, throughput_depth=args.throughput_depth,
                             repeats=args.repeats, seed=args.seed,
                             conv=lists.parse(args.conv, "--conv", low=1), data=args.data)
    else:
        from coordinator.bench import transport
        transports = lists.parse(args.transports, "--transports", str, choices=("ipc", "tcp"))
        result = transport.run(sizes_kib=lists.parse(args.sizes, "--sizes", low=1, required=True),
                               transports=transports, round_trips=args.round_trips, stream=args.stream,
                               seed=args.seed)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
        print(f"figures written to {args.json}")
    if args.plot:
        from coordinator.bench import plot, raceboard, stallboard
        from coordinator.bench.netlab import plot as netplot
        {"network": netplot, "race": raceboard, "stall": stallboard}.get(args.bench, plot).draw(result, args.plot)
        print(f"plot written to {args.plot}")
    sys.stdout.flush()
    # A network sweep, race or stall bench that went on past a failed job fails; so does a fuzz whose job crashed
    # (even if a restart hid it) or hung: the verdict is the exit.
    return 1 if result.get("failed") or (args.bench == "fuzz" and fuzz.verdict(result)) else 0
