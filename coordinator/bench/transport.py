"""`dni bench transport`: one hop of the project's messages against raw pyzmq zero-copy multipart.

Two processes: this one sends and times; an echo process (`python -m coordinator.bench.transport`)
receives and, for round trips, sends every message straight back. Both paths carry the very
same frames: the project's encode() output (msgpack header + one raw array frame). The project
path goes through make_socket / transport.send / transport.recv (encode and strict decode at
each end); the raw path sends the prepared frames with send_multipart(copy=False) and receives
with recv_multipart(copy=False). Paths alternate in rounds so machine noise hits both alike.
One-way latency compares send and receive times taken with perf_counter in the two processes:
on Linux both read CLOCK_MONOTONIC, which is the same clock machine-wide.
"""
from __future__ import annotations

import workers.runtime.blas  # noqa: F401  (first: the echo process runs this module as __main__)

# isort: split

import subprocess
import sys
import tempfile
import time

import numpy as np
import zmq

from coordinator.bench import report
from coordinator.metrics import percentiles
from protocol import Kind, Message, encode
from protocol.sockets import make_socket, recv, send
from workers.runtime.allocator import keep_freed_memory

PATHS = ("project", "raw")
ROUNDS = 20                     # alternations of the two paths per size (round trips)
STREAM_ROUNDS = 5               # streams per path and size (each long enough to time)
BUDGET = 256 * 1024 * 1024      # bytes per path and size: fewer repetitions for big messages,
MIN_REPS = 200                  # but not fewer than this
TIMEOUT_MS = 30_000             # the echo gives up (and exits) after this long without word


def sockets(ctx: zmq.Context, path: str) -> tuple[zmq.Socket, zmq.Socket]:
    """(PUSH, PULL) as that path makes them: the project's options, or pyzmq's defaults.

    A receive timeout on both, so a dead peer ends the bench (zmq.Again) instead of hanging it.
    """
    if path == "project":
        push, pull = make_socket(ctx, zmq.PUSH), make_socket(ctx, zmq.PULL)
    else:
        push, pull = ctx.socket(zmq.PUSH), ctx.socket(zmq.PULL)
        push.linger = pull.linger = 0
    pull.rcvtimeo = TIMEOUT_MS
    return push, pull


def endpoint(transport: str, tmp: str, name: str) -> str:
    return f"ipc://{tmp}/{name}" if transport == "ipc" else "tcp://127.0.0.1:*"


# -- the echo process ----------------------------------------------------------------------
def echo(control_endpoint: str, transport: str, tmp: str) -> None:
    """Bind one inbox per path, report the endpoints, then serve phases until told to quit."""
    keep_freed_memory()  # as every dni process does (the timing side runs under `dni`)
    ctx = zmq.Context()
    control = ctx.socket(zmq.PAIR)
    control.linger = 0
    control.connect(control_endpoint)
    socks = {}
    try:
        inboxes = {}
        for path in PATHS:
            push, pull = sockets(ctx, path)
            pull.bind(endpoint(transport, tmp, f"echo-{path}"))
            inboxes[path] = pull.getsockopt_string(zmq.LAST_ENDPOINT)
            socks[path] = (push, pull)
        control.send_json({"inboxes": inboxes})
        replies = control.recv_json()["replies"]
        for path, (push, _) in socks.items():
            push.connect(replies[path])
        while control.poll(TIMEOUT_MS):
            cmd = control.recv_json()
            if cmd["do"] == "quit":
                break
            control.send_json({"t": serve_phase(cmd, *socks[cmd["path"]])})
    finally:
        for push, pull in socks.values():
            push.close(0)
            pull.close(0)
        control.close(0)
        ctx.term()


def serve_phase(cmd: dict, push: zmq.Socket, pull: zmq.Socket) -> list[float]:
    """Receive cmd['n'] messages (echoing each for round trips); returns their receive times."""
    times = []
    project = cmd["path"] == "project"
    for _ in range(cmd["n"]):
        if project:
            _, msg = recv(pull)
            times.append(time.perf_counter())
            if cmd["mode"] == "rtt":
                send(push, msg)
        else:
            frames = pull.recv_multipart(copy=False)
            times.append(time.perf_counter())
            if cmd["mode"] == "rtt":  # the received bytes as a new zero-copy message, as the project does
                push.send_multipart([f.buffer for f in frames], copy=False)
    if cmd["mode"] == "stream":   # one acknowledgement at the end of the stream
        if project:
            send(push, Message(Kind.SYNC, "echo"))
        else:
            push.send(b"done")
    return times


# -- the timing side -----------------------------------------------------------------------
class Peer:
    """The echo process and this side's sockets to it, for one transport."""

    def __init__(self, ctx: zmq.Context, transport: str, tmp: str):
        self.control = ctx.socket(zmq.PAIR)
        self.control.linger = 0
        self.control.bind(f"ipc://{tmp}/control-{transport}")
        self.proc = subprocess.Popen([sys.executable, "-m", "coordinator.bench.transport",
                                      self.control.getsockopt_string(zmq.LAST_ENDPOINT), transport, tmp])
        self.socks = {}
        try:
            if not self.control.poll(TIMEOUT_MS):
                raise TimeoutError(f"the {transport} echo process did not start")
            inboxes = self.control.recv_json()["inboxes"]
            replies = {}
            for path in PATHS:
                push, pull = sockets(ctx, path)
                self.socks[path] = (push, pull)
                pull.bind(endpoint(transport, tmp, f"reply-{path}"))
                replies[path] = pull.getsockopt_string(zmq.LAST_ENDPOINT)
                push.connect(inboxes[path])
            self.control.send_json({"replies": replies})
        except BaseException:
            self.close()
            raise

    def phase(self, path: str, mode: str, n: int) -> None:
        self.control.send_json({"do": "phase", "path": path, "mode": mode, "n": n})

    def times(self) -> np.ndarray:
        if not self.control.poll(TIMEOUT_MS):
            raise TimeoutError("the echo process did not report")
        return np.array(self.control.recv_json()["t"])

    def close(self) -> None:
        try:
            self.control.send_json({"do": "quit"}, zmq.NOBLOCK)
        except zmq.ZMQError:
            pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for push, pull in self.socks.values():
            push.close(0)
            pull.close(0)
        self.control.close(0)


def round_trips(peer: Peer, path: str, msg: Message, n: int) -> tuple[list[float], list[float]]:
    """n round trips; (round-trip µs, one-way µs)."""
    push, pull = peer.socks[path]
    frames = encode(msg)
    sent, rtt = np.empty(n), np.empty(n)
    peer.phase(path, "rtt", n)
    for i in range(n):
        if path == "project":
            t0 = time.perf_counter()
            send(push, Message(msg.kind, msg.src, i, msg.meta, msg.arrays))
            recv(pull)
        else:
            t0 = time.perf_counter()
            push.send_multipart(frames, copy=False)
            pull.recv_multipart(copy=False)
        rtt[i] = time.perf_counter() - t0
        sent[i] = t0
    return list(rtt * 1e6), list((peer.times() - sent) * 1e6)


def stream(peer: Peer, path: str, msg: Message, n: int) -> float:
    """n messages back to back, then the echo's acknowledgement; messages/s."""
    push, pull = peer.socks[path]
    frames = encode(msg)
    peer.phase(path, "stream", n)
    t0 = time.perf_counter()
    for i in range(n):
        if path == "project":
            send(push, Message(msg.kind, msg.src, i, msg.meta, msg.arrays))
        else:
            push.send_multipart(frames, copy=False)
    if path == "project":
        recv(pull)
    else:
        pull.recv()
    rate = n / (time.perf_counter() - t0)
    peer.times()
    return rate


def measure_size(peer: Peer, kib: int, n_rtt: int, n_stream: int, rng: np.random.Generator) -> dict:
    x = rng.standard_normal((kib, 256)).astype(np.float32)   # 256 float32 = 1 KiB a row
    msg = Message(Kind.GRAD, "stage-2", 0, {}, {"g": x})   # one array, as a gradient travels
    # Fewer repetitions for big messages, but enough for a p99 and a stream past its start-up.
    budget = max(MIN_REPS, BUDGET // (kib * 1024))
    reps, stream_n = max(1, min(n_rtt, budget) // ROUNDS), max(1, min(n_stream, budget) // STREAM_ROUNDS)
    rtt, one_way, rates = {p: [] for p in PATHS}, {p: [] for p in PATHS}, {p: [] for p in PATHS}
    for path in PATHS:  # warm up both paths: connections, allocator, caches
        round_trips(peer, path, msg, min(50, reps))
    for r in range(ROUNDS):
        for path in (PATHS if r % 2 == 0 else PATHS[::-1]):
            a, b = round_trips(peer, path, msg, reps)
            rtt[path] += a
            one_way[path] += b
            if r < STREAM_ROUNDS:
                rates[path].append(stream(peer, path, msg, stream_n))
    out = {"kib": kib, "bytes": x.nbytes}
    for path in PATHS:
        out[path] = {"rtt_us": percentiles(rtt[path]), "one_way_us": percentiles(one_way[path]),
                     "stream_msgs_per_s": float(np.median(rates[path]))}
    raw, ours = out["raw"], out["project"]
    out["overhead"] = {"rtt_p50_us": ours["rtt_us"]["p50"] - raw["rtt_us"]["p50"],
                       "rtt_p50_ratio": ours["rtt_us"]["p50"] / raw["rtt_us"]["p50"],
                       "rtt_p99_ratio": ours["rtt_us"]["p99"] / raw["rtt_us"]["p99"],
                       "stream_ratio": ours["stream_msgs_per_s"] / raw["stream_msgs_per_s"]}
    return out


def targets(result: dict) -> list[dict]:
    out = []
    for t in result["transports"]:
        for s in t["sizes"]:
            o, where = s["overhead"], f"{s['kib']} KiB {t['transport']}"
            if s["kib"] == 128 and t["transport"] == "ipc":
                raw_p50 = s["raw"]["rtt_us"]["p50"]
                out += [report.target(f"{where}: added to the raw p50 round trip, µs (limit max(10%, 10 µs))",
                                     o["rtt_p50_us"], "<=", max(0.1 * raw_p50, 10.0)),
                        report.target(f"{where}: p99 round trip / raw", o["rtt_p99_ratio"], "<=", 1.5),
                        report.target(f"{where}: streaming messages/s / raw", o["stream_ratio"], ">=", 0.9)]
            if s["kib"] >= 1024:
                out.append(report.target(f"{where}: p50 round trip / raw", o["rtt_p50_ratio"], "<=", 1.1))
    return out


def run(sizes_kib: list[int], transports: list[str], round_trips: int, stream: int, seed: int) -> dict:
    result = {"bench": "transport", "machine": report.machine(),
              "params": {"sizes_kib": sizes_kib, "transports": transports, "round_trips": round_trips,
                         "stream": stream, "rounds": ROUNDS, "stream_rounds": STREAM_ROUNDS,
                         "budget_bytes": BUDGET, "min_repetitions": MIN_REPS, "seed": seed},
              "transports": []}
    print(report.describe(result["machine"]))
    rng = np.random.default_rng(seed)
    ctx = zmq.Context()
    try:
        with tempfile.TemporaryDirectory(prefix="dni-bench-") as tmp:
            for transport in transports:
                peer = Peer(ctx, transport, tmp)
                try:
                    sizes = [measure_size(peer, kib, round_trips, stream, rng) for kib in sizes_kib]
                except zmq.Again:  # a receive timed out
                    raise TimeoutError(f"the {transport} echo process stopped answering") from None
                finally:
                    peer.close()
                result["transports"].append({"transport": transport, "sizes": sizes})
                print_transport(result["transports"][-1])
    finally:
        ctx.term()
    result["targets"] = targets(result)
    report.print_targets(result["targets"])
    return result


def print_transport(t: dict) -> None:
    print(f"\n{t['transport']}: round trip and one way (µs), streaming (messages/s); project vs raw pyzmq")
    print("      KiB  rtt p50 ours/raw   rtt p99 ours/raw  1-way p50 ours/raw    stream ours/raw   rtt p50 +µs")
    for s in t["sizes"]:
        o, r = s["project"], s["raw"]
        print(f"  {s['kib']:7d} {o['rtt_us']['p50']:8.1f} {r['rtt_us']['p50']:8.1f} "
              f"{o['rtt_us']['p99']:8.1f} {r['rtt_us']['p99']:8.1f}  {o['one_way_us']['p50']:8.1f} "
              f"{r['one_way_us']['p50']:8.1f}  {o['stream_msgs_per_s']:8.0f} {r['stream_msgs_per_s']:8.0f}"
              f"  {s['overhead']['rtt_p50_us']:+9.1f}")


if __name__ == "__main__":
    echo(*sys.argv[1:4])
