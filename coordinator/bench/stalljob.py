"""One job of `dni bench stall`: `dni run` on this host, one stage stalled partway through (SIGSTOP or a CPU quota)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from coordinator.bench import procfs
from workers.runtime import blas

TIMEOUT_S = 3600.0
POLL_S = 0.02         # how often the bench looks at the job: where the head is, whether it still runs
STOPPED_WAIT_S = 5.0  # a SIGSTOPped worker shows as stopped (T) in /proc within this
LOG_EVERY = 10        # the jobs' --log-every: the head's progress reaches metrics.jsonl every 10 batches


class Refused(RuntimeError):
    """`dni run` refused the row's flags before it began (an option it does not have, one it rejects)."""


class Stall:
    """No stall: the unstalled run, measured over the same window of time at the same batch."""
    how = "none"

    def begin(self, pid: int) -> None:
        pass

    def end(self) -> None:
        pass

    def remove(self) -> None:
        """Whatever the stall set up, undone once the job is over."""

    def figures(self) -> dict:
        """What the stall itself reports, read as it ends."""
        return {}


class SigStop(Stall):
    """The worker stopped (SIGSTOP) and continued (SIGCONT): shorter than its liveness bound, it is not missed."""
    how = "sigstop"

    def __init__(self):
        self.pid = None

    def begin(self, pid: int) -> None:
        self.pid = pid
        os.kill(pid, signal.SIGSTOP)
        deadline = time.monotonic() + STOPPED_WAIT_S
        # Stopped for sure before the stall's clock starts: no update of it is stamped inside the window.
        while procfs.state(pid) not in ("T", "t", None) and time.monotonic() < deadline:
            time.sleep(0.001)

    def end(self) -> None:
        """Continued (at most once): before any teardown, or the coordinator would wait on a stopped worker."""
        if self.pid is not None:
            try:
                os.kill(self.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
            self.pid = None


class CpuSlow(Stall):
    """The worker's host slowed to `share` of a core (the network lab's CFS quota); needs root."""
    how = "quota"

    def __init__(self, share: float):
        self.share, self.quota = share, None

    def begin(self, pid: int) -> None:
        from coordinator.bench.netlab import shaping
        self.quota = shaping.CpuQuota(f"dni-bench-stall-{os.getpid()}", self.share)
        self.quota.add(pid)

    def end(self) -> None:
        if self.quota is not None:
            self.quota.lift()

    def figures(self) -> dict:
        """The quota, and how often and how long the kernel held the stage back under it."""
        return {"share": self.share, "period_us": self.quota.period, **self.quota.throttled()}

    def remove(self) -> None:
        """The group removed (its processes are gone)."""
        if self.quota is not None:
            self.quota.remove()
            self.quota = None


class Tail:
    """The records metrics.jsonl gained since the last look (whole lines only); the file `dni run` replaces as
    it starts (its rewind) is read again from the top."""

    def __init__(self, path: Path):
        self.path, self.inode, self.offset, self.partial = path, None, 0, b""

    def new(self) -> list[dict]:
        try:
            with open(self.path, "rb") as f:
                inode = os.fstat(f.fileno()).st_ino
                if inode != self.inode:
                    self.inode, self.offset, self.partial = inode, 0, b""
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        self.offset += len(data)
        *lines, self.partial = (self.partial + data).split(b"\n")
        return [json.loads(line) for line in lines if line]


def stall_through(proc: subprocess.Popen, out: Path, p: dict, stall: Stall) -> dict | None:
    """Wait for the head to pass the stall's batch, stall the stage for p["seconds"], end it: the stall's
    window; None if the job ended first."""
    tail, head = Tail(out / "metrics.jsonl"), p["stages"]
    at = max(1, int(p["at"] * p["total_steps"]))
    deadline = time.monotonic() + TIMEOUT_S
    while not any(r["stage"] == head and r["step"] >= at for r in tail.new()):
        if proc.poll() is not None:
            return None
        if time.monotonic() > deadline:
            raise RuntimeError(f"the head did not reach batch {at} within {TIMEOUT_S:.0f} s")
        time.sleep(POLL_S)
    pid = procfs.workers(proc.pid).get(p["stage"])
    if pid is None:
        raise RuntimeError(f"no worker of stage {p['stage']} among the job's processes")
    stall.begin(pid)
    start = time.time()
    until = start + p["seconds"]
    # The unstalled run has the same window, from the same batch, and nothing to wait for in it.
    while stall.how != "none" and time.time() < until and proc.poll() is None:
        time.sleep(min(POLL_S, max(until - time.time(), 0)))
    # Read before the worker goes on: none of its updates during the stall falls outside it.
    end = until if stall.how == "none" else time.time()
    figures = stall.figures()
    stall.end()
    return {"how": stall.how, "at_step": at, "start": start, "end": end, "pid": pid, **figures}


def run(flags: tuple[str, ...], common: list[str], p: dict, out: Path, stall: Stall) -> dict:
    """The job: its summary.json, the stall's window, and its metrics records."""
    argv = [sys.executable, "-m", "coordinator", "run", "--no-progress", "--overwrite", *common, *flags,
            "--out", str(out), "--log-every", str(LOG_EVERY), "--heartbeat", str(p["heartbeat"]),
            "--checkpoint-every", "0", "--checkpoint-seconds", "0"]   # checkpoints at the end only
    log_path = out.parent / f"{out.name}.log"
    (out / "metrics.jsonl").unlink(missing_ok=True)   # a kept directory's last run: not this job's progress
    with open(log_path, "w") as log:
        # Its own session: Ctrl-C reaches the bench only, which continues the stalled worker first.
        proc = subprocess.Popen(argv, env=blas.pinned(), stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        window = None
        try:
            window = stall_through(proc, out, p, stall)
            rc = proc.wait(TIMEOUT_S)
        except subprocess.TimeoutExpired:
            rc = None
        finally:
            stall.end()
            if proc.poll() is None:   # the coordinator stops and reaps its workers on SIGTERM
                proc.terminate()
                proc.wait()
            stall.remove()
    if rc is None:
        raise RuntimeError(f"the job did not finish within {TIMEOUT_S:.0f} s; see {log_path}")
    if rc:
        lines = log_path.read_text(errors="replace").strip().splitlines() or [f"exit {rc}"]
        if rc == 2:   # `dni run`'s exit for options (or data) it refuses
            raise Refused(lines[-1])
        raise RuntimeError(f"the job failed (exit {rc}): {lines[-1]}")
    if window is None:
        raise RuntimeError(f"the job ended before the head reached the stall's batch; see {log_path}")
    return {"summary": json.loads((out / "summary.json").read_text()), "stall": window,
            "records": [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]}
