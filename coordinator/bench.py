"""`dni bench latency|transport`: options, the machine a run is on, target checks, JSON and plot output."""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import sys
import warnings
from pathlib import Path

from coordinator.config import Config

BLAS_ENV = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_CORETYPE")


def _openblas() -> dict:
    """The kernel OpenBLAS picked and the threads it uses, asked of the loaded library itself."""
    with open("/proc/self/maps") as maps:
        paths = sorted({line.split()[-1] for line in maps if "openblas" in line.rsplit("/", 1)[-1].lower()})
    out = {}
    for path in paths:
        lib = ctypes.CDLL(path)
        for key, names, restype in (("kernel", ("scipy_openblas_get_corename64_", "openblas_get_corename64_",
                                                "openblas_get_corename"), ctypes.c_char_p),
                                    ("threads", ("scipy_openblas_get_num_threads64_", "openblas_get_num_threads64_",
                                                 "openblas_get_num_threads"), ctypes.c_int)):
            fn = next((getattr(lib, n) for n in names if hasattr(lib, n)), None)
            if fn is not None:
                fn.restype = restype
                value = fn()
                out[key] = value.decode() if isinstance(value, bytes) else value
    return out


def machine() -> dict:
    """What a figure depends on: cores, BLAS build, kernel and threads, ZeroMQ versions, load."""
    import numpy as np
    import zmq

    with warnings.catch_warnings():  # numpy nags about pyyaml when asked for its config
        warnings.simplefilter("ignore")
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    return {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "numpy": np.__version__,
            "blas": {"name": blas.get("name"), "version": blas.get("version"),
                     "config": blas.get("openblas configuration"), **_openblas()},
            "env": {k: os.environ.get(k) for k in BLAS_ENV},
            "pyzmq": zmq.__version__, "libzmq": zmq.zmq_version(),
            "load_average": list(os.getloadavg())}


def describe(m: dict) -> str:
    b = m["blas"]
    env = " ".join(f"{k}={v}" for k, v in m["env"].items() if v is not None)
    return (f"machine: {m['cpus']} cpus, {m['platform']}, python {m['python']}, numpy {m['numpy']}\n"
            f"  BLAS {b['name']} {b['version']} kernel {b.get('kernel', '?')} threads {b.get('threads', '?')}"
            f" ({env})\n"
            f"  pyzmq {m['pyzmq']} libzmq {m['libzmq']}  "
            f"load average {' '.join(f'{x:.2f}' for x in m['load_average'])}")


def target(name: str, value: float, op: str, limit: float) -> dict:
    ok = value <= limit if op == "<=" else value >= limit
    return {"name": name, "value": value, "op": op, "limit": limit, "pass": bool(ok)}


def print_targets(targets: list[dict]) -> None:
    print("\ntargets")
    for t in targets:
        print(f"  {'pass' if t['pass'] else 'MISS'}  {t['name']}: {t['value']:.3g} (want {t['op']} {t['limit']:g})")


def _ints(text: str, option: str) -> list[int]:
    try:
        values = [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise ValueError(f"{option}: expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise ValueError(f"{option}: expected positive integers, got {text!r}")
    return values


def add_parser(sub) -> None:
    bench = sub.add_parser("bench", help="benchmarks: update latency against depth, transport overhead")
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
    tr = kinds.add_parser("transport", help="the project's messages against raw pyzmq zero-copy, one hop",
                          formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    tr.add_argument("--sizes", default="4,16,64,128,256,1024,4096", help="message sizes in KiB")
    tr.add_argument("--transports", default="ipc,tcp", help="ipc and/or tcp (loopback)")
    tr.add_argument("--round-trips", type=int, default=2000,
                    help="round trips per size and path (fewer for big messages)")
    tr.add_argument("--stream", type=int, default=4000, help="messages streamed per size and path (fewer for big ones)")
    for p in (lat, tr):
        p.add_argument("--seed", type=int, default=0, help="seed")
        p.add_argument("--json", metavar="FILE", help="write every figure to FILE")
        p.add_argument("--plot", metavar="FILE.png", help="draw the figures (needs the plot extra: matplotlib)")
    bench.set_defaults(func=cmd_bench)


def cmd_bench(args) -> int:
    if args.plot:
        from coordinator import plot
        try:
            plot.require()   # before minutes of measuring, not after
        except ImportError as exc:
            print(f"dni: error: {exc}", file=sys.stderr)
            return 2
    if args.bench == "latency":
        from coordinator import bench_latency
        result = bench_latency.run(depths=_ints(args.depths, "--depths"), width=args.width, batch=args.batch, steps=args.steps,
                                   warmup=args.warmup, window=args.window, throughput_depth=args.throughput_depth,
                                   repeats=args.repeats, seed=args.seed)
    else:
        from coordinator import bench_transport
        transports = [t.strip() for t in args.transports.split(",") if t.strip()]
        if not transports or set(transports) - {"ipc", "tcp"}:
            raise ValueError(f"--transports: expected ipc and/or tcp, got {args.transports!r}")
        result = bench_transport.run(sizes_kib=_ints(args.sizes, "--sizes"), transports=transports,
                                     round_trips=args.round_trips, stream=args.stream, seed=args.seed)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
        print(f"figures written to {args.json}")
    if args.plot:
        from coordinator import plot
        plot.draw(result, args.plot)
        print(f"plot written to {args.plot}")
    sys.stdout.flush()
    return 0
