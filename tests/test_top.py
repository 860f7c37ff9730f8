"""`dni top`: the status a real run writes, as --once shows it, live and finished; bad input in one line; read-only."""
import io
import json
import os
import pty
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest
from resumable import WatchedRun, records, stage_pid
from timing import FAST, wait_until

from coordinator.cli import main
from coordinator.status import RECENT
from coordinator.top import live, view
from protocol import liveness

# cdni on the generated task: every stage has a synthesizer but the head; records every 10 steps.
JOB = ["--hidden", "32,32", "--epochs", "3", "--log-every", "10", "--checkpoint-seconds", "0"]
LONG = ["--hidden", "32,32", "--epochs", "200", "--log-every", "10", "--checkpoint-every", "100",
        "--checkpoint-seconds", "0", "--max-restarts", "1"]
NOBODY = 65534


def top(run_dir: Path, *flags: str) -> tuple[int, str, str]:
    """`dni top --once RUN_DIR` (or other flags) in a child process: exit code, stdout, stderr. The live view
    draws as wide as COLUMNS says (rich's default off a terminal, 80 columns, cuts its cells short)."""
    done = subprocess.run([sys.executable, "-m", "coordinator", "top", *flags, str(run_dir)], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "COLUMNS": "160"})
    return done.returncode, done.stdout, done.stderr


def table(text: str) -> dict[str, dict[str, str]]:
    """--once's rows by stage name ("stage 1"), each by column."""
    lines = text.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("stage "))
    out = {}
    for line in lines[head + 1:]:
        if not line.startswith("stage "):
            break
        cells = line.split()
        # "stage 1" is two words; the marker, if any, is the rest
        name, rest = f"{cells[0]} {cells[1]}", cells[2:]
        out[name] = dict(zip(("host", "pid", "state", "upd/s", "p50", "p99", "cosine", "stale", "dropped"), rest))
    return out


def tree(path: Path) -> dict[str, tuple[int, bytes]]:
    """Every file under path: its mtime (ns) and contents."""
    return {str(p.relative_to(path)): (p.stat().st_mtime_ns, p.read_bytes()) for p in path.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A real short run, ended; its stderr in `announced`."""
    out = tmp_path_factory.mktemp("top") / "run"
    done = subprocess.run([sys.executable, "-m", "coordinator", "run", "--out", str(out), *FAST, *JOB],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    (out / "announced").write_text(done.stderr)
    return out


def test_run_says_where_to_look(finished):
    said = (finished / "announced").read_text().splitlines()
    assert f"run directory {finished}" in said and f"watch it:     dni top {finished}" in said
    assert not any("tensorboard" in line for line in said)   # only with --tensorboard


def test_once_on_a_finished_run_shows_every_stage_as_its_metrics_say(finished):
    before = tree(finished)
    rc, out, err = top(finished, "--once")
    assert rc == 0 and not err, err
    assert tree(finished) == before   # dni top never writes into the run directory
    summary = json.loads((finished / "summary.json").read_text())
    assert f"step {summary['steps']}/{summary['steps']}" in out and "epoch 3/3" in out
    assert out.rstrip().endswith(f"the run has ended: finished after {summary['steps']} steps, "
                                 f"test accuracy {summary['test_accuracy']:.4f}")
    rows, recs = table(out), records(finished)
    assert sorted(rows) == ["stage 1", "stage 2", "stage 3"]
    for k in (1, 2, 3):
        mine = [r for r in recs if r["stage"] == k]
        latency = [r["latency_ms"] for r in mine][-RECENT:]
        row = rows[f"stage {k}"]
        assert row["state"] == "stopped" and row["dropped"] == "0"
        assert (row["p50"], row["p99"]) == (f"{np.percentile(latency, 50):.3f}", f"{np.percentile(latency, 99):.3f}")
        if k < 3:   # the head has no synthesizer
            assert row["cosine"] == f"{np.mean([r['cos'] for r in mine][-RECENT:]):.3f}"
            assert row["stale"] == str(mine[-1]["staleness"])
        else:
            assert (row["cosine"], row["stale"]) == ("-", "-")
    assert view.MARK not in out   # a bottleneck is named only while the job trains


def test_the_live_view_of_a_finished_run_draws_its_final_state_and_ends(finished):
    rc, out, err = top(finished)
    assert rc == 0, err
    assert "stage 3" in out and "the run has ended: finished" in out


def test_without_rich_a_hint_and_once_still_works(finished, tmp_path):
    (tmp_path / "sitecustomize.py").write_text("import sys\nsys.modules['rich'] = None\n")   # rich not installed
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    live = subprocess.run([sys.executable, "-m", "coordinator", "top", str(finished)], capture_output=True,
                          text=True, env=env, timeout=60)
    assert live.returncode == 1 and live.stderr.count("\n") == 1 and "pip install 'dni-synthgrad[top]'" in live.stderr
    once = subprocess.run([sys.executable, "-m", "coordinator", "top", "--once", str(finished)], capture_output=True,
                          text=True, env=env, timeout=60)
    assert once.returncode == 0 and "stage 3" in once.stdout, once.stderr


@pytest.mark.parametrize("damage, words", [
    (lambda d: (d / "status.json").unlink(), "holds no run that dni top can follow"),
    (lambda d: (d / "status.json").write_text('{"version": 1, "job"'), "status.json is corrupt: not JSON"),
    (lambda d: (d / "status.json").write_text("[1, 2]"), "status.json is corrupt: not a map"),
    (lambda d: (d / "status.json").write_text(
        (d / "status.json").read_text().replace('"step": ', '"step": "x", "was": ', 1)), "job.step is str"),
    (lambda d: (d / "status.json").write_text(
        (d / "status.json").read_text().replace('"version": 1', '"version": 99')), "has layout 99"),
    (lambda d: shutil.rmtree(d), "no such directory"),
    (lambda d: ((d / "status.json").unlink(), (d / "status.json").symlink_to("/etc/passwd")), "is a symbolic link"),
], ids=["no status file", "not JSON", "not a map", "a field of another type", "another layout", "no directory",
        "a link"])
def test_bad_input_is_one_line(finished, tmp_path, damage, words):
    run = tmp_path / "copy"
    shutil.copytree(finished, run)
    damage(run)
    rc, out, err = top(run, "--once")
    assert rc == 2 and not out and err.count("\n") == 1 and words in err, err


def as_nobody(run_dir: Path) -> tuple[int, str]:
    """`dni top --once RUN_DIR` as user nobody, in a forked child of this process (which has every module it
    needs loaded: nobody may not read this interpreter's files): its exit code and stderr."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:   # the child: never returns to pytest
        code = 99
        try:
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            err = io.StringIO()
            with redirect_stderr(err), redirect_stdout(io.StringIO()):
                code = main(["top", "--once", str(run_dir)])
            os.write(write, err.getvalue().encode())
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read) as f:
        said = f.read()
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), said


def test_no_read_permission_is_one_line(finished):
    base = Path(tempfile.mkdtemp(prefix="dni-top-"))   # under /tmp, which nobody may enter (tmp_path it may not)
    try:
        base.chmod(0o755)
        run = base / "run"
        shutil.copytree(finished, run)
        run.chmod(0o755)
        (run / "status.json").chmod(0o600)
        rc, err = as_nobody(run)
        assert rc == 2 and err == f"dni: error: {run / 'status.json'}: permission denied\n"
        run.chmod(0o700)
        rc, err = as_nobody(run)
        assert rc == 2 and err == f"dni: error: {run}: permission denied (cannot read the run directory)\n"
    finally:
        shutil.rmtree(base)


def once(run_dir: Path) -> tuple[str, dict]:
    rc, out, err = top(run_dir, "--once")
    assert rc == 0, err
    return out, table(out)


def step(text: str) -> int:
    return int(text.split("step ", 1)[1].split("/", 1)[0])


def figured(run_dir: Path) -> bool:
    """Every stage has rates in the status file: two heartbeats, two metric messages."""
    path = run_dir / "status.json"
    stages = json.loads(path.read_text())["stages"] if path.exists() else []
    return bool(stages) and all(s["busy"] is not None and s["updates_per_second"] is not None for s in stages)


@pytest.mark.slow
def test_while_training_and_after_a_worker_is_killed(tmp_path):
    run = WatchedRun(tmp_path / "run", *LONG)
    out = run.out
    try:
        wait_until(lambda: figured(out), 60, "figures in the status", run.proc)
        first, rows = once(out)
        assert {row["state"] for row in rows.values()} == {"training"}, first
        assert view.MARK in first and "restarts 0" in first
        wait_until(lambda: step(once(out)[0]) > step(first), 30, "a rising step", run.proc)
        os.kill(stage_pid(2), signal.SIGKILL)
        wait_until(lambda: "restarts 1" in once(out)[0], 30, "the restart", run.proc)
        wait_until(lambda: {r["state"] for r in once(out)[1].values()} == {"training"}, 60, "training again",
                   run.proc)
    finally:
        run.proc.send_signal(signal.SIGTERM)
        assert run.wait() == 143, run.text
    text, rows = once(out)
    assert "the run has ended: interrupted: stopped by SIGTERM" in text and "restarts 1" in text
    assert {row["state"] for row in rows.values()} == {"stopped"}


def test_a_run_whose_coordinator_was_killed_is_said_to_have_ended_so(finished, tmp_path):
    run = tmp_path / "copy"
    shutil.copytree(finished, run)
    dead = subprocess.Popen(["true"])
    dead.wait()   # a pid no process has now
    status = json.loads((run / "status.json").read_text())
    status.update(ended=None, state="training", pid=dead.pid, host=os.uname().nodename)
    (run / "status.json").write_text(json.dumps(status))
    text, _ = once(run)
    assert text.rstrip().endswith(f"the run has ended: the coordinator (pid {dead.pid}) is gone without saying how "
                                  "the run ended (killed?)")


@pytest.mark.slow
def test_a_status_file_that_cannot_be_written_is_said_once_and_the_run_goes_on(tmp_path):
    run = WatchedRun(tmp_path / "run", "--hidden", "32,32", "--epochs", "6", "--log-every", "10")
    tmp = run.out / "status.json.tmp"
    wait_until(lambda: (run.out / "status.json").exists(), 60, "the status file", run.proc)
    while not tmp.is_dir():   # where the next status is written: a directory, as a full disk or a bad mount would
        try:
            tmp.mkdir()
        except FileExistsError:   # a status being written right now: it is renamed away at once
            pass
    assert run.wait() == 0, run.text
    said = [line for line in run.lines if "dni top cannot follow this run" in line]
    assert len(said) == 1 and str(run.out / "status.json") in said[0], run.text
    assert json.loads((run.out / "summary.json").read_text())["steps"] > 0


def live_copy(finished: Path, tmp_path: Path) -> Path:
    """A copy of the finished run whose status says it still trains, under a coordinator that lives (this process)."""
    run = tmp_path / "live"
    shutil.copytree(finished, run)
    status = json.loads((run / "status.json").read_text())
    status.update(ended=None, state="training", pid=os.getpid(), host=os.uname().nodename, updated=time.time())
    (run / "status.json").write_text(json.dumps(status))
    return run


@pytest.mark.parametrize("how", ["q", "Ctrl-C"])
def test_the_live_view_quits_on_q_or_ctrl_c(finished, tmp_path, how):
    run = live_copy(finished, tmp_path)
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "coordinator", "top", str(run)], stdin=slave, stdout=slave,
                            stderr=slave, env={**os.environ, "COLUMNS": "160"}, start_new_session=True)
    os.close(slave)
    drawn = b""
    try:
        while b"stage 3" not in drawn:   # the first view is on the terminal: the keys are read from now on
            assert select.select([master], [], [], 30)[0], drawn
            drawn += os.read(master, 65536)
        if how == "q":
            os.write(master, b"q")
        else:
            proc.send_signal(signal.SIGINT)
        # A refresh, then exit: the bound is a process's ordinary stop allowance, as a loaded machine needs.
        assert proc.wait(timeout=live.REFRESH_S + liveness.REAP_TIMEOUT_S) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)


@pytest.mark.slow
def test_a_coordinator_waiting_for_its_workers_shows_them_starting(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "coordinator", "coordinator", "--bind", f"ipc://{tmp_path}/control",
                             "--workers", "3", "--out", str(out), *FAST, *JOB], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: (out / "status.json").exists(), 30, "the status file", proc)
        text, rows = once(out)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert "   starting   " in text.splitlines()[0]
    assert sorted(rows) == ["stage 1", "stage 2", "stage 3"] and {r["state"] for r in rows.values()} == {"starting"}
    assert proc.returncode == 143, err
    assert "the run has ended: interrupted: stopped by SIGTERM" in once(out)[0]
