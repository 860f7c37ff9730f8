"""Helpers of the failure tests: a `dni run` in a child process, waiting for its progress, comparing checkpoints."""
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
from timing import FAST, wait_until
from watched import Watched

from coordinator import checkpoint
from coordinator.cli import main
from workers.runtime import proctitle

# A run whose workers were killed and replaced redoes the steps since its last checkpoint: it ends as
# well as the same run undisturbed, give or take this (ten times the spread of undisturbed cdni runs).
RESTART_SPREAD = 0.02


def start(out: Path, *argv: str, command: str = "run") -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "coordinator", command, "--out", str(out), *FAST, *argv],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def stopped_by_sigterm(out: Path, *argv: str, after: int = 20) -> tuple[str, dict]:
    """`dni run ARGV` into out, SIGTERMed once it has logged step `after`: (its stderr, the checkpoint's progress)."""
    proc = start(out, *argv)
    wait_until(lambda: steps_logged(out) >= after, 60, f"step {after}", proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 143, err   # 128 + SIGTERM, after the checkpoint
    return err, checkpoint.latest(out).progress


def steps_logged(out: Path) -> int:
    """The highest step in metrics.jsonl so far (-1 before any)."""
    path = out / "metrics.jsonl"
    found = re.findall(r'"step": (\d+)', path.read_text()) if path.exists() else []
    return max(map(int, found), default=-1)


def assert_same_checkpoint(a: Path, b: Path) -> None:
    """Every array of both runs' checkpoints (weights, moments, counters) identical, bit for bit."""
    _, want = checkpoint.load(a)
    _, got = checkpoint.load(b)
    assert got.keys() == want.keys()
    for stage, arrays in want.items():
        assert got[stage].keys() == arrays.keys()
        for name, value in arrays.items():
            assert np.array_equal(got[stage][name], value), (stage, name)


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def worker_pids() -> list[int]:
    """This test session's worker processes (by the tag conftest gives every child)."""
    tag = os.environ["DNI_TEST_TAG"].encode()
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            env = Path(f"/proc/{pid}/environ").read_bytes()
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        # `dni worker` on a host, `python -P -m workers` as `dni run` starts them, or as it titled itself
        words = cmd.split(b"\0")
        worker = b"worker" in words or b"workers" in words or cmd.startswith(b"dni worker ")
        if worker and tag in env and state != "Z":
            found.append(int(pid))
    return found


class WatchedRun(Watched):
    """`dni run` (or another command) in a child process, its stderr watched; .out is its run directory."""

    def __init__(self, out: Path, *argv: str, command: str = "run"):
        self.out = out
        proc = start(out, *argv, command=command)
        super().__init__(proc, proc.stderr)


def stage_pid(stage: int) -> int:
    """The live worker process of a stage (started with --stage, as `dni run` starts them)."""
    for pid in worker_pids():
        if proctitle.stage_of(Path(f"/proc/{pid}/cmdline").read_bytes()) == stage:
            return pid
    raise AssertionError(f"no worker for stage {stage}")


def killed_and_replaced(tmp_path: Path, job: list[str], stage: int, at: int) -> tuple[Path, Path]:
    """The job run whole, then again with the stage's worker SIGKILLed once `at` steps are logged (one restart);
    returns both run directories, for the caller to compare."""
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert main(["run", *job, "--out", str(whole), *FAST]) == 0
    run = WatchedRun(killed, *job, "--max-restarts", "1")
    wait_until(lambda: steps_logged(killed) >= at, 60, f"step {at}", run.proc)
    os.kill(stage_pid(stage), signal.SIGKILL)
    assert run.wait() == 0, run.text
    assert summary(killed)["restarts"] == 1
    return whole, killed

