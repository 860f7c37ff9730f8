"""A real `dni run` in a subprocess, and its sockets found as anyone on the host finds them: through /proc."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import zmq
from timing import FAST, training, wait_until

from coordinator.bench import procfs

JOB = ["--hidden", "32,32", "--epochs", "12", "--seed", "1"]   # 3 stages: 32 -> 32 -> 32 -> 10


class Job:
    """`dni run ARGS` with its run directory in tmp_path; .control and .inbox[stage] once training runs."""

    def __init__(self, tmp_path: Path, *args: str, env: dict | None = None):
        self.out = tmp_path / "run"
        cmd = [sys.executable, "-m", "coordinator", "run", "--out", str(self.out), *FAST, *args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, **(env or {})})
        self.ctx = zmq.Context()

    def training(self, timeout: float = 30) -> "Job":
        wait_until(lambda: training(self.out), timeout, "the first step", self.proc)
        self.workers = procfs.workers(self.proc.pid)
        self.control = "ipc://" + procfs.unix_listening(self.proc.pid)[0]
        self.inbox = {k: "ipc://" + procfs.unix_listening(pid)[0] for k, pid in self.workers.items()}
        return self

    def send(self, endpoint: str, frames_list, dealer: bool = False) -> int:
        """Send every message; a peer that stops reading stops us after a second. Returns how many went."""
        sock = self.ctx.socket(zmq.DEALER if dealer else zmq.PUSH)
        sock.setsockopt(zmq.SNDTIMEO, 1000)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(endpoint)
        sent = 0
        try:
            for frames in frames_list:
                sock.send_multipart(frames, copy=False)
                sent += 1
        except zmq.Again:
            pass
        time.sleep(0.2)   # let them leave before the socket goes
        sock.close(linger=0)
        return sent

    def finish(self, timeout: float = 60) -> tuple[int | None, str]:
        """(exit code, stderr); None if it did not exit within timeout (it is killed, with its workers)."""
        try:
            _, err = self.proc.communicate(timeout=timeout)
            code = self.proc.returncode
        except subprocess.TimeoutExpired:
            for pid in procfs.workers(self.proc.pid).values():
                os.kill(pid, 9)
            self.proc.kill()
            _, err = self.proc.communicate()
            code = None
        self.ctx.term()
        return code, err


def one_line_error(err: str, *words: str) -> str:
    last = err.strip().splitlines()[-1]
    assert last.startswith("dni: error:") and all(w in last for w in words), err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    return last
