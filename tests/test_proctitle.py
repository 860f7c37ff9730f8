"""Every local worker names itself in ps and top: its stage of how many, the mode and the run."""
import subprocess
import sys
from pathlib import Path

from resumable import worker_pids
from timing import FAST, wait_until

from workers.runtime import proctitle

JOB = ["--hidden", "16,16,16", "--mode", "dni", "--epochs", "200", "--train-subset", "512"]


def titles() -> dict[int, tuple[str, str]]:
    """pid -> (command line, kernel name) of this session's workers."""
    found = {}
    for pid in worker_pids():
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
            found[pid] = cmd, Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            continue
    return found


def test_ps_shows_each_workers_stage_mode_and_run(tmp_path):
    out = tmp_path / "named-run"
    proc = subprocess.Popen([sys.executable, "-m", "coordinator", "run", "--out", str(out), *FAST, *JOB],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: sorted(comm for _, comm in titles().values()) ==
                   [f"dni stage {k}/4" for k in range(1, 5)], 60, "4 titled workers", proc)
        commands = sorted(cmd for cmd, _ in titles().values())
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 143, err
    if proctitle.setproctitle is not None:   # the command line itself is rewritten only by the extra
        assert commands == [f"dni worker stage {k}/4 dni (named-run)" for k in range(1, 5)]


def test_a_worker_waiting_for_its_coordinator_says_so(tmp_path):
    worker = subprocess.Popen([sys.executable, "-m", "workers", "--coordinator", f"ipc://{tmp_path}/none",
                               "--stage", "2"], stderr=subprocess.DEVNULL)
    try:
        comm = Path(f"/proc/{worker.pid}/comm")
        wait_until(lambda: comm.read_text().strip() == "dni waiting 2", 10, "the waiting title", worker)
        cmd = Path(f"/proc/{worker.pid}/cmdline").read_bytes()
        assert proctitle.stage_of(cmd) == 2
        if proctitle.setproctitle is not None:
            assert cmd.rstrip(b"\0") == b"dni worker stage 2 waiting for coordinator"
    finally:
        worker.kill()
        worker.wait()
