"""`dni bench fuzz`: messages with valid headers and random contents sent to every socket of a running job.

The job is a real `dni run`. Its sockets are found as an attacker on the host would find them,
in /proc/net/unix (abstract endpoints named after the coordinator's pid). Each message is
well-formed on the wire, of any kind, from any sender name, with an id inside or outside the
credit window, and random contents: shapes (often the right widths), dtypes, values with NaN
and inf, arrays missing or extra. The job must finish (exit 0, no worker replaced) with the
accuracy of the same run undisturbed; its counters show the drops; memory is read before and
after the fuzz. A feed-forward job and a recurrent one (`--model rnn`) alike: the names and
widths come from the job's own options.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import zmq

from coordinator import config
from coordinator.bench import procfs
from coordinator.data.tasks import n_inputs
from protocol import Kind, Message, encode
from protocol.kinds import DTYPES
from protocol.roles import BOX, LAYER, PARAMS, worker_name
from protocol.schema import SCHEMAS, Count

STRANGERS = ["stage-1", "box-1", "params", "pid-1", "", "x" * 300, "\n\x1b[31m"]   # names of no one, or of others
GENERATED_WIDTHS = (32, 10)   # the generated task's input and classes (a job without --data)
# Half the messages are data kinds from plausible senders: they get past the sender check to
# the deeper ones (window, shapes, labels, values).
DATA_KINDS = [Kind.FORWARD, Kind.GRAD, Kind.EVAL, Kind.SYNC, Kind.SYNC_BACK]
MAX_ELEMENTS = 1 << 20     # per random array: a fuzz message stays below ~8 MiB


def _shape(rng, widths: list[int], rank: int) -> tuple[int, ...]:
    sizes = widths + [1, 7, 128, 0, int(rng.integers(1, 300))]
    shape = tuple(int(rng.choice(sizes)) for _ in range(rank))
    return shape if np.prod(shape) <= MAX_ELEMENTS else (7,) * rank


def _array(rng, widths: list[int], rank: int, floats: bool) -> np.ndarray:
    dtype = np.dtype(rng.choice(sorted(DTYPES))) if rng.random() < 0.3 else np.dtype(
        np.float32 if floats else np.int64)
    shape = _shape(rng, widths, rank)
    if dtype.kind == "f":
        a = (rng.standard_normal(shape) * 10.0 ** rng.uniform(-2, 2)).astype(dtype)
        if a.size and rng.random() < 0.4:
            a.flat[rng.integers(0, a.size, size=max(1, a.size // 50))] = rng.choice([np.nan, np.inf, -np.inf])
        return a
    return rng.integers(-3, 16, size=shape).astype(dtype)


def _meta_value(rng, kind):
    if isinstance(kind, tuple):
        kind = kind[int(rng.integers(len(kind)))]
    if rng.random() < 0.1:   # the wrong type
        return rng.choice(["junk", -1, 1.5, None])
    if kind is Count or kind is int:
        return int(rng.integers(0, 1000))
    if kind is float:
        return float(rng.choice([rng.standard_normal(), np.nan, np.inf, 1e300]))
    if kind is str:
        return str(rng.choice(["tcp://127.0.0.1:1", "nonsense", "x" * 100]))
    if kind is dict:
        return {str(rng.choice(["forward", "eval", "sync"])): int(rng.integers(-5, 10**6))}
    if kind is list:
        return [{"step": int(rng.integers(0, 100)), "loss": float(rng.standard_normal())}] * int(rng.integers(0, 5))
    return None


def target(options: list[str]) -> tuple[list[int], list[str]]:
    """The widths a job of `dni run OPTIONS` sends and the names its workers take data from (ConfigError if bad)."""
    parser = argparse.ArgumentParser(add_help=False)
    config.add_arguments(parser)
    cfg = config.from_args(parser.parse_known_args(options)[0])
    if cfg.model == "rnn":
        steps = cfg.boxes * cfg.steps_per_box
        boxes = [worker_name(BOX, j) for j in range(1, cfg.boxes + 1)]
        widths = [n_inputs(cfg.task, steps), cfg.units, 2 * cfg.units, cfg.steps_per_box, steps, cfg.batch_size]
        return widths, ["coordinator", *boxes, *([] if cfg.untied else [worker_name(PARAMS, 0)])]
    sizes = cfg.hidden_sizes()
    stages = [worker_name(LAYER, k) for k in range(1, len(sizes) + 2)]
    return [GENERATED_WIDTHS[0], *sizes, GENERATED_WIDTHS[1]], ["coordinator", *stages]


def message(rng: np.random.Generator, widths: list[int], near: int, members: list[str]) -> list:
    """One message's frames: a valid header, random contents, an id near `near` or far from it, from one of
    `members` (the names the job's workers take data from) or from anyone."""
    plausible = rng.random() < 0.5
    kinds = DATA_KINDS if plausible else list(Kind)
    kind = kinds[int(rng.integers(len(kinds)))]
    schema = SCHEMAS[kind]
    meta = {name: _meta_value(rng, t) for name, t in {**schema.meta, **schema.optional}.items()
            if rng.random() < 0.95}
    variant = schema.variants[int(rng.integers(len(schema.variants)))]
    arrays = {name: _array(rng, widths, int(rng.choice(ranks)), kinds == "f")
              for name, (kinds, ranks) in variant.items() if rng.random() < 0.9}
    if schema.any_floats or rng.random() < 0.15:
        arrays[str(rng.choice(["layer.W", "cell.Wx", "extra"]))] = _array(rng, widths, 2, True)
    b = near + int(rng.integers(-40, 40)) if rng.random() < 0.7 else int(rng.choice([-1, 10**15, 2**62, near + 10**6]))
    src = str(rng.choice(members if plausible else members + STRANGERS))
    return encode(Message(kind, src, b, meta, arrays))


def sockets_of(pid: int) -> list[str]:
    """The abstract ipc endpoints of the job whose coordinator runs as pid (control first)."""
    prefix = f"@dni-{pid}-"
    found = {"ipc://" + name for name in procfs.unix_listening() if name.startswith(prefix)}
    return sorted(found, key=lambda e: (not e.endswith("/control"), e))


def processes(pid: int) -> dict[str, int]:
    """The coordinator and its workers, by name."""
    return {"coordinator": pid, **{f"worker {stage}": p for stage, p in procfs.workers(pid).items()}}


def last_step(run_dir: Path) -> int:
    try:
        with open(run_dir / "metrics.jsonl", "rb") as f:
            f.seek(max(0, f.seek(0, 2) - 4096))
            lines = f.read().splitlines()
        return int(json.loads(lines[-1])["step"]) if len(lines) > 1 else 0
    except (OSError, ValueError, KeyError, IndexError):
        return 0


def stderr_of(out: Path) -> Path:
    """Where the job of run directory `out` writes its stderr (beside the run directory)."""
    return out.with_name(out.name + ".stderr")


def job(out: Path, args: list[str]) -> subprocess.Popen:
    # stderr to a file, not a pipe: nobody reads a pipe while the fuzz sends, and a job whose (rate-limited)
    # drop logs filled one would block on its next line, and look hung (measured: after 190 s, 1M messages).
    cmd = [sys.executable, "-m", "coordinator", "run", "--out", str(out), "--no-progress", "--overwrite", *args]
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(stderr_of(out), "w") as err:
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)


def finish(proc: subprocess.Popen, out: Path, timeout: float) -> dict:
    try:
        proc.wait(timeout=timeout)
        hang = False
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        hang = True
    err = stderr_of(out).read_text(errors="replace")
    if hang:
        return {"exit": None, "hang": True, "stderr": err[-2000:]}
    result = {"exit": proc.returncode, "hang": False, "stderr": err[-2000:], "stderr_lines": len(err.splitlines())}
    if proc.returncode == 0:
        summary = json.loads((out / "summary.json").read_text())
        dropped = {"coordinator": summary.get("dropped", {})}
        dropped.update({f"worker {k}": w.get("dropped", {}) for k, w in summary["workers"].items()})
        # A worker that crashed and was replaced (--max-restarts) is a crash all the same.
        result.update(accuracy=summary["test_accuracy"], dropped=dropped, restarts=summary.get("restarts", 0),
                      dropped_total=sum(sum(d.values()) for d in dropped.values()))
    return result


def run(out: Path, args: list[str], messages: int, seed: int = 0, timeout: float = 600.0,
        baseline: bool = True) -> dict:
    """Fuzz a job of `dni run ARGS` with `messages` per socket; with `baseline`, first the same job undisturbed."""
    widths, members = target(args)
    result = {"args": args, "messages_per_socket": messages, "seed": seed}
    if baseline:
        result["undisturbed"] = finish(job(out / "undisturbed", args), out / "undisturbed", timeout)
    run_dir = out / "fuzzed"
    proc = job(run_dir, args)
    deadline = time.monotonic() + 60
    while last_step(run_dir) < 1 or len(sockets_of(proc.pid)) < 2:
        if proc.poll() is not None or time.monotonic() > deadline:
            result["fuzzed"] = finish(proc, run_dir, timeout)
            return result
        time.sleep(0.05)
    time.sleep(0.2)   # every worker's inbox is bound by now
    endpoints, pids = sockets_of(proc.pid), processes(proc.pid)
    before = {name: procfs.rss_mb(p) for name, p in pids.items()}
    rng = np.random.default_rng(seed)
    ctx = zmq.Context()
    socks = []
    for e in endpoints:
        s = ctx.socket(zmq.DEALER if e.endswith("/control") else zmq.PUSH)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.SNDTIMEO, 2000)   # a job that stops reading is the job's problem, not ours
        s.connect(e)
        socks.append(s)
    sent, t0, near = 0, time.perf_counter(), 0
    try:
        for i in range(messages):
            if i % 100 == 0:
                near = last_step(run_dir)
            for s in socks:
                s.send_multipart(message(rng, widths, near, members), copy=False)
                sent += 1
    except zmq.ZMQError:
        pass   # the job ended (or stopped reading): what was sent is counted
    finally:
        for s in socks:
            s.close(linger=2000)   # what is queued still goes: every message sent is one the job must drop
        ctx.term()
    fuzz_s = time.perf_counter() - t0
    time.sleep(0.5)   # the last messages handled
    after = {name: procfs.rss_mb(p) for name, p in pids.items()}
    result["fuzzed"] = finish(proc, run_dir, timeout)
    result.update(sockets=endpoints, sent=sent, fuzz_seconds=fuzz_s,
                  rss_mb={n: {"before": before[n], "after": after[n]} for n in pids})
    return result


def verdict(result: dict) -> str | None:
    """What went wrong with the fuzzed job (None: nothing): a hang, an exit other than 0, a worker replaced."""
    fuzzed = result.get("fuzzed", {})
    if fuzzed.get("hang"):
        return "HANG"
    if fuzzed.get("exit") != 0:
        return f"CRASH exit {fuzzed.get('exit')}"
    return f"CRASH: {fuzzed['restarts']} worker(s) replaced" if fuzzed.get("restarts") else None


def report(result: dict) -> str:
    """The figures, one per line; the last one the verdict."""
    lines = [f"fuzz: {result.get('sent', 0):,} messages to {len(result.get('sockets', []))} sockets "
             f"in {result.get('fuzz_seconds', 0):.1f} s ({result['messages_per_socket']:,} per socket)"]
    for name in ("undisturbed", "fuzzed"):
        r = result.get(name)
        if r is not None:
            state = "HANG" if r["hang"] else ("exit 0" if r["exit"] == 0 else f"CRASH exit {r['exit']}")
            state += f" after {r['restarts']} CRASH(ES) and restart(s)" if r.get("restarts") else ""
            acc = f"  test accuracy {r['accuracy']:.4f}" if "accuracy" in r else ""
            lines.append(f"{name}: {state}{acc}  stderr lines {r.get('stderr_lines', '?')}")
    fuzzed = result.get("fuzzed", {})
    if "dropped" in fuzzed:
        lines.append(f"dropped {fuzzed['dropped_total']:,}: " + "; ".join(
            f"{who} {sum(d.values()):,}" for who, d in fuzzed["dropped"].items()))
    for name, m in result.get("rss_mb", {}).items():
        if m["before"] is not None and m["after"] is not None:
            lines.append(f"  {name}: RSS {m['before']:.0f} MB -> {m['after']:.0f} MB ({m['after'] - m['before']:+.0f})")
    lines.append(f"verdict: {verdict(result) or 'no crash, no hang'}")
    return "\n".join(lines)
