"""Issue 5's figures: one job locally (ipc) and across network namespaces (tcp, with and without CURVE),
and what CURVE costs on one 128 KiB hop.

usage (root): .venv/bin/python benchmarks/multihost.py [--data DIR] [--epochs 2] [--hidden 256,256] [--mode dni]
                                                     [--repeat 3]

One after the other on this machine, --repeat times in turn (medians are reported, so that load
from elsewhere hits every setting alike): `dni run` (ipc, no keys); the same job as `dni coordinator`
plus one `dni worker` per stage, each in its own namespace (tcp, CURVE); the same again with
--insecure (tcp, no CURVE). Then round trips of one message of the project's encoding carrying a
128x256 float32 array (128 KiB: a batch of activations) between two namespaces over tcp,
without and with CURVE, alternating in rounds so machine noise hits both alike.
"""
import argparse
import json
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import zmq

import workers.runtime.blas  # noqa: F401  (first: pins BLAS threads before numpy loads)
from coordinator.bench.netlab.hosts import hosts
from coordinator.lists import parse
from protocol import Kind, Message
from protocol.auth import Gate
from protocol.keys import generate, load_client, load_public, load_server
from protocol.sockets import make_socket, recv, send

ROOT = Path(__file__).resolve().parents[1]

PORT, HOP_PLAIN, HOP_CURVE = 5555, 6000, 6001
ROUNDS, PER_ROUND, WARMUP = 5, 400, 200


def dni(*argv: str) -> list[str]:
    return [sys.executable, "-m", "coordinator", *argv]


def local_run(job: list[str], out: Path) -> dict:
    subprocess.run(dni("run", *job, "--out", str(out)), check=True, stdout=subprocess.DEVNULL)
    return json.loads((out / "summary.json").read_text())


def namespace_run(job: list[str], out: Path, keys: Path | None, stages: int) -> dict:
    security = (lambda i: ["--key", str(keys / f"worker-{i}.key_secret"),
                           "--server-key", str(keys / "coordinator.key")]) if keys else (lambda i: ["--insecure"])
    with hosts(stages + 1, prefix="dnibm") as (c, *ws):
        coord = c.popen(dni("coordinator", "--bind", f"tcp://{c.ip}:{PORT}", "--workers", str(stages),
                            *(["--keys", str(keys)] if keys else ["--insecure"]), *job, "--out", str(out)),
                        stdout=subprocess.DEVNULL)
        workers = [w.popen(dni("worker", "--coordinator", f"tcp://{c.ip}:{PORT}", *security(i)))
                   for i, w in enumerate(ws)]
        if coord.wait(1800) or any(w.wait(60) for w in workers):
            raise SystemExit("a process of the namespace run failed")
    return json.loads((out / "summary.json").read_text())


def echo(keys: str) -> None:
    """Serve round trips on two ports, plain and CURVE, until 30 s pass without a message."""
    ctx = zmq.Context()
    client = load_client(Path(keys) / "worker-0.key_secret")[0]
    gate = Gate(ctx, logging.getLogger("bench"), "not the bench client", [client])
    plain = make_socket(ctx, zmq.ROUTER)
    curve = make_socket(ctx, zmq.ROUTER, {"server": load_server(keys)})
    plain.bind(f"tcp://*:{HOP_PLAIN}")
    curve.bind(f"tcp://*:{HOP_CURVE}")
    poller = zmq.Poller()
    for s in (plain, curve):
        poller.register(s, zmq.POLLIN)
    print("ready", flush=True)
    while events := poller.poll(30_000):
        for s, _ in events:
            identity, msg = recv(s, router=True)
            send(s, msg, identity)
    for s in (plain, curve):
        s.close(linger=0)
    gate.close()
    ctx.term()


def ping(server: str, keys: str) -> None:
    """Time round trips against the echo on both ports, alternating; print one-way figures as JSON."""
    ctx = zmq.Context()
    own = load_client(Path(keys) / "worker-0.key_secret")
    socks = {"plain": make_socket(ctx, zmq.DEALER),
             "curve": make_socket(ctx, zmq.DEALER, {"client": (*own, load_public(Path(keys) / "coordinator.key"))})}
    socks["plain"].connect(f"tcp://{server}:{HOP_PLAIN}")
    socks["curve"].connect(f"tcp://{server}:{HOP_CURVE}")
    msg = Message(Kind.GRAD, "bench", 0, {}, {"g": np.random.default_rng(0).random((128, 256), np.float32)})
    rtt = {name: [] for name in socks}

    def trip(sock) -> float:
        t0 = time.perf_counter()
        send(sock, msg)
        if not sock.poll(10_000):
            raise SystemExit("no echo within 10 s")
        recv(sock)
        return time.perf_counter() - t0

    for name, sock in socks.items():
        for _ in range(WARMUP):
            trip(sock)
    for _ in range(ROUNDS):
        for name, sock in socks.items():
            rtt[name] += [trip(sock) for _ in range(PER_ROUND)]
    for sock in socks.values():
        sock.close(linger=0)
    ctx.term()
    print(json.dumps({name: {"rtt_p50_us": float(np.percentile(v, 50)) * 1e6,
                             "rtt_p99_us": float(np.percentile(v, 99)) * 1e6} for name, v in rtt.items()}))


def hop(keys: Path) -> dict:
    with hosts(2, prefix="dnibm") as (a, b):
        server = b.popen([sys.executable, __file__, "_echo", str(keys)], stdout=subprocess.PIPE, text=True)
        assert server.stdout.readline().strip() == "ready"
        result = json.loads(a.run([sys.executable, __file__, "_ping", b.ip, str(keys)], timeout=600).stdout)
        server.kill()
        server.wait()
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "mnist"))
    p.add_argument("--epochs", default="2")
    p.add_argument("--hidden", default="256,256")
    p.add_argument("--mode", default="dni")
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    job = ["--data", args.data, "--epochs", args.epochs, "--hidden", args.hidden, "--mode", args.mode,
           "--no-progress", "--checkpoint-every", "0"]
    stages = len(parse(args.hidden, "--hidden")) + 1
    with tempfile.TemporaryDirectory(prefix="dni-bench-") as tmp:
        tmp = Path(tmp)
        keys = generate(tmp / "keys", workers=stages)
        settings = {"local ipc (dni run)": lambda out: local_run(job, out),
                    "namespaces tcp + CURVE": lambda out: namespace_run(job, out, keys, stages),
                    "namespaces tcp, --insecure": lambda out: namespace_run(job, out, None, stages)}
        runs = {name: [] for name in settings}
        for r in range(args.repeat):
            for i, (name, start) in enumerate(settings.items()):
                runs[name].append(start(tmp / f"run-{r}-{i}"))
        hops = hop(keys)
    print(f"MNIST 784-{args.hidden.replace(',', '-')}-10, {args.mode}, {args.epochs} epochs, batch 128; "
          f"medians of {args.repeat} runs each (every run's value in brackets)")
    print(f"{'':28} {'samples/s':>10} {'stage-1 p50 ms':>15} {'stage-1 p99 ms':>15} {'test acc':>9}")
    for name, summaries in runs.items():
        columns = [[s["samples_per_second"] for s in summaries],
                   [s["update_latency_ms"]["1"]["p50"] for s in summaries],
                   [s["update_latency_ms"]["1"]["p99"] for s in summaries],
                   [s["test_accuracy"] for s in summaries]]
        med = [float(np.median(c)) for c in columns]
        print(f"{name:28} {med[0]:10,.0f} {med[1]:15.3f} {med[2]:15.3f} {med[3]:9.4f}   "
              f"[{', '.join(f'{v:,.0f}' for v in columns[0])} samples/s; "
              f"{', '.join(f'{v:.2f}' for v in columns[1])} ms]")
    plain, curve = hops["plain"], hops["curve"]
    print(f"one 128 KiB message, round trip between two namespaces over tcp ({ROUNDS}x{PER_ROUND} each, "
          f"alternating): plain p50 {plain['rtt_p50_us']:.0f} us (p99 {plain['rtt_p99_us']:.0f}), "
          f"CURVE p50 {curve['rtt_p50_us']:.0f} us (p99 {curve['rtt_p99_us']:.0f})")
    print(f"CURVE cost per 128 KiB hop (half the round-trip difference): "
          f"{(curve['rtt_p50_us'] - plain['rtt_p50_us']) / 2:.0f} us")


if __name__ == "__main__":
    if sys.argv[1:2] == ["_echo"]:
        echo(sys.argv[2])
    elif sys.argv[1:2] == ["_ping"]:
        ping(sys.argv[2], sys.argv[3])
    else:
        main()
