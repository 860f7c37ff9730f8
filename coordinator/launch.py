"""Start local workers, which run the very function `dni worker` runs on a remote machine, and reap them."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from protocol import liveness
from workers.runtime import blas


def worker_command(coordinator: str, *extra: str) -> list[str]:
    """`dni worker --coordinator ENDPOINT ...` as a local worker runs it: `python -m workers`, which loads none of
    the coordinator's modules. -P keeps the working directory off sys.path, where a user's concurrent.py or
    zmq.py would shadow what the worker imports."""
    return [sys.executable, "-P", "-m", "workers", "--coordinator", coordinator, *extra]


def spawn(coordinator: str, stages: int) -> dict[int, subprocess.Popen]:
    """One worker process per stage, each asking for its stage so local runs are deterministic."""
    return {k: spawn_one(coordinator, k) for k in range(1, stages + 1)}


def spawn_one(coordinator: str, stage: int) -> Worker:
    """The worker of one stage: at the start, or to replace one that was lost."""
    return Worker(worker_command(coordinator, "--stage", str(stage)))


class Worker(subprocess.Popen):
    """A local worker process; its stderr goes on to ours, line by line, and its last line is kept:
    a worker that exits before it registers is reported with it (its import error, say)."""

    def __init__(self, command: list[str]):
        # A new session: Ctrl-C reaches only the coordinator, which then stops the workers cleanly.
        super().__init__(command, env=blas.pinned(), start_new_session=True, stderr=subprocess.PIPE)
        keep_nice(self.pid)
        self.last = ""
        self.tee = threading.Thread(target=self._tee, daemon=True)
        self.tee.start()

    def _tee(self) -> None:
        with self.stderr:
            for line in iter(self.stderr.readline, b""):
                text = line.decode(errors="replace")
                sys.stderr.write(text)
                sys.stderr.flush()
                self.last = text.strip() or self.last

    def last_line(self) -> str:
        """Its last line on stderr ("" if none), once it has exited: the pipe closes with it, soon read to the end."""
        self.tee.join(liveness.KILL_TIMEOUT_S)
        return self.last


def keep_nice(pid: int) -> None:
    """Give a worker's session the coordinator's nice. Linux puts each new session in an autogroup of its own
    (when sched_autogroup_enabled), whose share of the CPU ignores its processes' nice: without this, `nice
    dni run` would lower the coordinator alone, and its workers would take a full share each."""
    nice = os.nice(0)
    if nice:
        try:
            Path(f"/proc/{pid}/autogroup").write_text(str(nice))
        except OSError:   # no autogroups in this kernel, or the worker has already gone
            pass


def reap(procs, timeout: float = liveness.REAP_TIMEOUT_S, at_once: bool = False) -> None:
    """Wait for children to exit; terminate, then kill, whatever lingers. Never leaves an orphan.

    All at once, on one deadline: a stuck worker costs the timeout once, not once per worker.
    at_once (Ctrl-C twice): kill them without waiting.
    """
    procs = list(procs)
    steps = ((0.0, kill),) if at_once else ((timeout, terminate), (liveness.KILL_TIMEOUT_S, kill))
    for grace, stop in steps:
        deadline = time.monotonic() + grace
        for p in procs:
            try:
                p.wait(max(deadline - time.monotonic(), 0))
            except subprocess.TimeoutExpired:
                pass
        procs = [p for p in procs if p.poll() is None]
        for p in procs:
            stop(p)
    for p in procs:
        p.wait()


def terminate(p: subprocess.Popen) -> None:
    p.terminate()
    p.send_signal(signal.SIGCONT)   # a stopped (SIGSTOP) process acts on SIGTERM only once continued


def kill(p: subprocess.Popen) -> None:
    p.kill()
