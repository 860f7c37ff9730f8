"""One `dni coordinator` + `dni worker` job across namespaces as hosts, with delayed, shaped links or a slow host."""
from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from coordinator.bench import procfs
from coordinator.bench.latency import stage_latencies, staleness
from coordinator.bench.netlab import relay, shaping
from coordinator.bench.netlab.hosts import SUBNET, Host, hosts
from coordinator.metrics import percentiles

CONTROL_PORT, ECHO_PORT = 5555, 7070
VIRTUAL = 200   # relay addresses are 10.77.X.(200 + i): the name of host i resolves there from every other host
PINGS = 10
LOOP = ("other", "wait", "idle")   # the worker loop's own CPU that is neither arithmetic nor messages


@dataclass(frozen=True)
class Setting:
    mode: str
    stages: int
    delay_ms: float
    window: int
    bandwidth: str | None = None
    slow_stage: int = 0               # 0: none
    slow_share: float = 0.25
    coordinator_delayed: bool = True  # False: the coordinator's own links pass the relays at once
    credit: str = "coordinator"       # --credit: link | coordinator

    def tag(self) -> str:
        return (f"{self.mode}-k{self.stages}-d{self.delay_ms:g}-w{self.window}"
                + (f"-bw{self.bandwidth}" if self.bandwidth else "")
                + (f"-slow{self.slow_stage}" if self.slow_stage else "")
                + ("" if self.coordinator_delayed else "-hopfree") + f"-{self.credit}")


def dni(*argv: str) -> list[str]:
    return [sys.executable, "-m", "coordinator", *argv]


def wait_for_port(proc: subprocess.Popen, among: set[int] | None = None, timeout: float = 60) -> int:
    """The port a just-started process listens on (a worker binds its inbox before it registers)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[-1]!r}...: exited with {proc.returncode} before it listened")
        ports = procfs.tcp_listening_ports(proc.pid) - {ECHO_PORT}
        if among is not None:
            ports &= among
        if ports:
            return ports.pop()
        time.sleep(0.05)
    raise TimeoutError(f"a process did not listen within {timeout:.0f} s")


@functools.cache
def on_a_message_path(pid: int, tid: str) -> bool:
    return tid == str(pid) or procfs.thread_name(pid, tid).startswith("ZMQbg/IO/")


def sched_ms(pid: int) -> dict[str, tuple[float, float, float]]:
    """Per thread of process `pid`: ms it has run and has waited runnable for a core (the kernel's
    schedstat: to the ns, where /proc/PID/stat counts 10 ms ticks), and that wait again if the thread
    is one a message goes through (its loop, the main thread, and ZeroMQ's I/O threads; not its other
    helpers: ZeroMQ's reaper, pyzmq's collector of zero-copy frames, CURVE's authenticator), else 0."""
    out = {}
    for tid in procfs.threads(pid):
        try:
            ran, waited = procfs.schedstat(pid, tid)
            out[tid] = (ran / 1e6, waited / 1e6, waited / 1e6 if on_a_message_path(pid, tid) else 0.0)
        except (FileNotFoundError, ProcessLookupError):
            continue   # a thread that has just exited
    return out


def sched_span(first: dict, last: dict) -> tuple[float, float, float]:
    """(ran, waited, path_waited) ms between two sched_ms samples, per thread: a thread that ended
    meanwhile is left out (summing over the threads alive at each sample made a total fall, and the
    wait of all threads less than that of the path's, when a helper thread ended), and one that began
    counts from its start."""
    spans = [[b - a for a, b in zip(first.get(tid, (0.0, 0.0, 0.0)), now)] for tid, now in last.items()]
    return tuple(sum(column) for column in zip(*spans)) if spans else (0.0, 0.0, 0.0)


def sample(procs: dict[str, subprocess.Popen], metrics: Path) -> dict:
    cpu, sched = {}, {}
    for name, proc in procs.items():
        try:
            cpu[name], sched[name] = procfs.cpu_seconds(proc.pid), sched_ms(proc.pid)
        except (FileNotFoundError, ProcessLookupError):
            cpu[name] = sched[name] = None
    busy, running = procfs.machine_busy()
    return {"t": time.monotonic(), "busy": busy, "running": running - 1, "cpu": cpu, "sched": sched,
            "lines": metrics.read_bytes().count(b"\n") if metrics.exists() else 0}


def wait_coordinator(procs: dict[str, subprocess.Popen], metrics: Path, timeout: float, stages: int) -> dict:
    """Wait for the coordinator (procs["coordinator"]); return its exit code and every process's CPU over training.

    Whole-life CPU would add each start (imports, the dataset) to every batch. Training is the
    span from the first metrics lines (the workers flush every 50 steps) to the last sample
    before the summary is written, but for an evaluation of a few batches. Over that span the
    machine's own busy time says how many cores other people's processes took.
    """
    coordinator = procs["coordinator"]
    deadline, first, last, running = time.monotonic() + timeout, None, None, []
    while coordinator.poll() is None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the coordinator did not finish within {timeout:.0f} s")
        now = sample(procs, metrics)
        if now["lines"] and first is None:
            first = now
        if not (metrics.parent / "summary.json").exists() and None not in now["cpu"].values():
            last = now
            if first is not None:
                running.append(now["running"])
        time.sleep(0.05)
    out = {"rc": coordinator.returncode, "steps": 0}
    if first and last and last["lines"] > first["lines"]:
        steps, wall = (last["lines"] - first["lines"]) / stages, last["t"] - first["t"]   # a line per stage and step
        ours = {name: last["cpu"][name] - first["cpu"][name] for name in procs}
        sched = {n: [v / steps for v in sched_span(first["sched"][n], last["sched"][n])] for n in procs}
        out.update(steps=steps, wall_s=wall, cpu_ms_per_batch={n: v * 1e3 / steps for n, v in ours.items()},
                   sched_ms_per_batch={n: dict(zip(("ran", "waited", "path_waited"), v))
                                       for n, v in sched.items()},
                   other_cores=max(0.0, (last["busy"] - first["busy"] - sum(ours.values())) / wall),
                   runnable=float(np.mean(running)) if running else None)
    return out


def last_line(log: Path) -> str:
    """The last line a process wrote to its log: the cause of its failure, for a one-line report."""
    lines = log.read_text(errors="replace").strip().splitlines()
    return lines[-1] if lines else "(nothing)"


def summarise(rtts: list[float]) -> dict:
    return {"p50": float(np.median(rtts)), "min": min(rtts), "max": max(rtts)}


def stage_cpu(time_s: dict, steps: int) -> dict:
    """A worker's CPU per batch in ms: its arithmetic (training its synthesizer apart), its sends and
    receives, its loop, its helper threads (ZeroMQ's I/O thread above all)."""
    main = time_s["main_cpu"]
    ms = {"compute": main["compute"], "synth": main["synth"], "send": main["send"], "receive": main["receive"],
          "loop": sum(main[c] for c in LOOP)}
    ms["threads"] = time_s["cpu"] - sum(ms.values())
    ms["total"] = time_s["cpu"]
    return {k: v * 1e3 / steps for k, v in ms.items()}


def run(s: Setting, p: dict, keys: Path | None, out: Path, use_netem: bool, timeout: float = 900) -> dict:
    """Run one job and return its figures. Hosts: coordinator, stages 1..K, and the relays' host."""
    k = s.stages
    quota = shaping.CpuQuota(f"dni-bench-{os.getpid()}-{s.slow_stage}", s.slow_share) if s.slow_stage else None
    relays, echoes, logs = {}, [], {}
    try:
        with hosts(k + 2, prefix="dninet") as (coord, *rest):
            members, r = [coord, *rest[:k]], rest[k]
            names = ["coord", *(f"stage{i}" for i in range(1, k + 1))]
            x = coord.ip.split(".")[2]
            virtual = {name: f"{SUBNET}.{x}.{VIRTUAL + i}" for i, name in enumerate(names)}
            seen_at = {name: (h.ip if use_netem else virtual[name]) for name, h in zip(names, members)}
            for name, h in zip(names, members):
                h.name_table({n: (h.ip if n == name else seen_at[n]) for n in names})
                # Into each host: the delay (netem, where there is one) and the bandwidth; out of it: the bandwidth.
                shaping.shape(h.veth, None, s.bandwidth, s.delay_ms if use_netem else 0.0)
                shaping.shape("eth0", h.name, s.bandwidth)
            security = (lambda i: ["--key", str(keys / f"worker-{i - 1}.key_secret"),
                                   "--server-key", str(keys / "coordinator.key")]) \
                if keys else (lambda i: ["--insecure"])
            # The coordinator first, so that it listens before any relay leads to it: a relay that
            # accepts and then finds nothing behind it drops the connection, and a worker whose
            # CURVE handshake is dropped gives up (a refused connection it would retry).
            argv = dni("coordinator", "--bind", f"tcp://{coord.ip}:{CONTROL_PORT}", "--workers", str(k),
                       *(["--keys", str(keys)] if keys else ["--insecure"]), "--out", str(out),
                       # the network: feed-forward layers unless the caller names another (time boxes)
                       *p.get("shape", ["--hidden", ",".join([str(p["width"])] * (k - 1))]),
                       "--mode", s.mode, "--window", str(s.window),
                       "--credit", s.credit, "--epochs", str(p["epochs"]), "--seed", str(p["seed"]), "--no-progress",
                       "--checkpoint-every", "0", *p["job"])
            logs[0] = open(out.parent / f"{out.name}.coordinator.log", "w")
            proc = coord.popen(argv, stdout=logs[0], stderr=subprocess.STDOUT)
            workers = []
            for i, h in enumerate(members[1:], start=1):
                argv = dni("worker", "--coordinator", f"tcp://coord:{CONTROL_PORT}", "--advertise", f"stage{i}",
                           "--stage", str(i), *security(i))
                logs[i] = open(out.parent / f"{out.name}.worker{i}.log", "w")
                workers.append(h.popen(argv, stdout=logs[i], stderr=subprocess.STDOUT))
                if quota and i == s.slow_stage:
                    quota.add(workers[-1].pid)   # at once: before it has done any work
            ports = {"coord": wait_for_port(proc, {CONTROL_PORT}),
                     **{f"stage{i}": wait_for_port(w) for i, w in enumerate(workers, 1)}}
            for h in members:
                sock = h.socket()
                sock.bind((h.ip, ECHO_PORT))
                sock.listen(8)
                echoes.append(relay.Echo(sock))

            def start_relay(name: str, host: Host, *ports_: int) -> None:
                delay = s.delay_ms if s.coordinator_delayed or name != "coord" else 0.0
                argv = [sys.executable, "-m", "coordinator.bench.netlab.relay", "--delay-ms", str(delay),
                        *(f"--forward={virtual[name]}:{port}={host.ip}:{port}" for port in ports_),
                        *([] if s.coordinator_delayed else ["--undelayed", coord.ip])]
                relays[f"{name}:{ports_[0]}"] = r.popen(argv, stdout=subprocess.PIPE, text=True)
                if not relays[f"{name}:{ports_[0]}"].stdout.readline().startswith("ready"):
                    raise RuntimeError(f"the relay in front of {name} did not start")

            if not use_netem:
                for name, h in zip(names, members):
                    r.add_address(virtual[name])
                    # The coordinator's echo apart: its control port opens only once every link is timed.
                    start_relay(name, h, *((ECHO_PORT,) if name == "coord" else (ports[name], ECHO_PORT)))
            chain = list(zip(names, [*names[1:], names[0]]))   # coordinator -> stage 1 -> ... -> head -> coordinator
            links = []
            for a, b in chain:
                # Twice: a small message (the link's own delay) and one of a batch's activations
                # (what a crossing of the pipeline costs, relay, shaping and kernels included).
                links.append({"from": a, "to": b, **{key: summarise(relay.ping(
                    members[names.index(a)].socket, (seen_at[b], ECHO_PORT), PINGS, size))
                    for key, size in (("rtt_ms", 64), ("rtt_message_ms", p["batch"] * p["width"] * 4))}})
            if not use_netem:
                start_relay("coord", coord, CONTROL_PORT)   # now the workers reach the coordinator, and training begins
            watched = {"coordinator": proc, **{f"stage{i}": w for i, w in enumerate(workers, 1)},
                       **{f"relay {name}": r for name, r in relays.items()}}
            span = wait_coordinator(watched, out / "metrics.jsonl", timeout, k)
            codes = [] if span["rc"] else [w.wait(30) for w in workers]   # a failed coordinator's are killed
            if span["rc"] or any(codes):
                raise RuntimeError(f"{s.tag()}: coordinator exit {span['rc']}, workers {codes}; the coordinator's "
                                   f"last line: {last_line(out.parent / f'{out.name}.coordinator.log')}")
            stats = {}
            for name, proc in relays.items():
                proc.send_signal(signal.SIGTERM)
                stats[name] = json.loads(proc.communicate(timeout=10)[0].strip().splitlines()[-1])
            throttled = quota.throttled() if quota else None
    finally:
        for e in echoes:
            e.close()
        for f in logs.values():
            f.close()
        if quota:
            quota.remove()
    return figures(s, p, out, links, stats, throttled, span, use_netem)


def figures(s: Setting, p: dict, out: Path, links: list, relays: dict, throttled, span: dict, use_netem: bool) -> dict:
    summary = json.loads((out / "summary.json").read_text())
    steps = summary["steps"]
    latency = stage_latencies(out, p["warmup"])
    during = span.get("cpu_ms_per_batch", {})
    return {**asdict(s), "delay_by": "netem" if use_netem else "relay", "steps": steps,
            "samples_per_second": summary["samples_per_second"], "train_seconds": summary["train_seconds"],
            "test_accuracy": summary["test_accuracy"],
            "stage1_latency_ms": percentiles(latency[1]),
            "latency_ms": {str(i): percentiles(v) for i, v in sorted(latency.items())},
            "staleness": staleness(out, p["warmup"]), "links": links,
            "cpu_ms_per_batch": {"stages": [stage_cpu(summary["workers"][str(i)]["time_s"], steps)
                                            for i in range(1, s.stages + 1)],
                                 "coordinator": during.get("coordinator"),
                                 "relays": sum(v for n, v in during.items() if n.startswith("relay")),
                                 # over training only, every thread: what the machine gave each process
                                 "during_training": during},
            # what each process ran, and waited runnable for a core (all of it, and on a message's path),
            # per batch over training
            "sched_ms_per_batch": span.get("sched_ms_per_batch"),
            "other_cores": span.get("other_cores"), "runnable": span.get("runnable"), "relays": relays,
            "throttled": throttled}
