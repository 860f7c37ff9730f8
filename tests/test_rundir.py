"""The run directory: one run at a time, regular files only, nothing outside it (real `dni run` processes)."""
import os
import subprocess
import sys

import pytest
from resumable import start
from timing import FAST, wait_until

from coordinator import checkpoint
from coordinator.cli import main

TINY = ["--hidden", "8", "--train-subset", "512", *FAST]   # the generated task: 4 steps an epoch


def ended(proc: subprocess.Popen, timeout: float = 30) -> str:
    """The stderr of a `dni` that must stop at once (killed, if it does not)."""
    try:
        return proc.communicate(timeout=timeout)[1]
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise AssertionError(f"still running after {timeout} s") from None


def refused(proc: subprocess.Popen, timeout: float = 30) -> str:
    """The one-line error of a `dni` that must stop at once, with exit code 2."""
    err = ended(proc, timeout)
    assert proc.returncode == 2 and err.startswith("dni: error:") and err.count("\n") == 1, err
    return err


@pytest.fixture
def finished(tmp_path):
    """A run that did its one epoch: --resume with a larger --epochs continues it."""
    run = tmp_path / "run"
    assert main(["run", *TINY, "--epochs", "1", "--out", str(run)]) == 0
    return run


@pytest.fixture
def live(tmp_path):
    """A run training for a long while, with a checkpoint already; stopped (SIGTERM) at the end."""
    run = tmp_path / "live"
    proc = start(run, *TINY, "--epochs", "10000", "--checkpoint-every", "20")
    wait_until(lambda: (run / checkpoint.MODEL_FILE).exists(), 60, "a checkpoint", proc)
    yield run, proc
    stop(proc)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()   # SIGTERM: a checkpoint, and the workers stopped
        proc.communicate(timeout=60)


@pytest.mark.parametrize("name", ["metrics.jsonl", "model.npz.tmp"])
def test_overwrite_refuses_a_run_file_linked_outside_and_leaves_its_target_whole(tmp_path, name):
    run, elsewhere = tmp_path / "run", tmp_path / "elsewhere"
    run.mkdir()
    elsewhere.write_bytes(b"x" * 4000)
    (run / name).symlink_to(elsewhere)
    proc = start(run, *TINY, "--epochs", "1", "--overwrite")
    err = ended(proc)
    assert elsewhere.read_bytes() == b"x" * 4000
    assert proc.returncode == 2 and err == f"dni: error: {run / name} is a symbolic link: " \
        "a run reads and writes only regular files of its own directory, never through a link; move it away\n"


def test_a_run_writes_new_files_in_place_of_hard_links_and_leaves_their_other_name_whole(tmp_path):
    run, elsewhere = tmp_path / "run", tmp_path / "elsewhere"
    run.mkdir()
    elsewhere.write_bytes(b"x" * 4000)
    for name in ("metrics.jsonl", "metrics.jsonl.tmp", "model.npz.tmp", "config.json.tmp", "summary.json.tmp"):
        (run / name).hardlink_to(elsewhere)
    proc = start(run, *TINY, "--epochs", "1", "--overwrite")
    err = ended(proc)
    assert elsewhere.read_bytes() == b"x" * 4000
    assert proc.returncode == 0, err


@pytest.mark.parametrize("name", ["metrics.jsonl", "model.npz"])
def test_resume_refuses_a_fifo_in_place_of_a_run_file_at_once(finished, name):
    (finished / name).unlink()
    os.mkfifo(finished / name)
    err = refused(start(finished, "--resume", str(finished), "--epochs", "2", command="run"), timeout=20)
    assert f"{finished / name} is a FIFO" in err


@pytest.mark.parametrize("argv", [
    ["run", "--resume", "{run}", "--epochs", "20000"],
    ["run", "--out", "{run}", *TINY, "--overwrite"],
    ["coordinator", "--resume", "{run}", "--epochs", "20000", "--workers", "2", "--insecure",
     "--bind", "ipc://@dni-test-rundir-{pid}"],
    ["slurm", "prepare", "--out", "{run}", *TINY],   # it would make new keys, for a job that runs there
], ids=["run --resume", "run --out --overwrite", "coordinator --resume", "slurm prepare"])
def test_a_second_run_in_a_live_runs_directory_is_refused_naming_its_pid(live, argv):
    run, proc = live
    metrics = (run / "metrics.jsonl").stat().st_ino
    argv = [a.format(run=run, pid=os.getpid()) for a in argv]
    err = refused(subprocess.Popen([sys.executable, "-m", "coordinator", *argv], stderr=subprocess.PIPE, text=True))
    assert f"{run} is in use by another run (pid {proc.pid} on " in err
    assert proc.poll() is None and (run / "metrics.jsonl").stat().st_ino == metrics   # the first, untouched
    assert not (run / "keys").exists()


def test_a_killed_runs_lock_does_not_block_its_resume(live):
    run, proc = live
    proc.kill()
    proc.communicate()
    assert f"pid {proc.pid} on " in (run / "run.lock").read_text()   # the kernel released the lock, not the file
    again = start(run, "--resume", str(run), command="run")
    try:
        wait_until(lambda: checkpoint.latest(run).progress["resumes"] == 1, 60, "a checkpoint of the resumed run",
                   again)
        assert f"pid {again.pid} on " in (run / "run.lock").read_text()
    finally:
        stop(again)


@pytest.mark.parametrize("name", ["keys", "logs"])
def test_slurm_prepare_refuses_its_directories_linked_outside(tmp_path, capsys, name):
    run, elsewhere = tmp_path / "run", tmp_path / "elsewhere"
    run.mkdir()
    elsewhere.mkdir()
    (run / name).symlink_to(elsewhere)
    assert main(["slurm", "prepare", "--out", str(run), "--hidden", "8"]) == 2
    assert f"{run / name} is a symbolic link" in capsys.readouterr().err
    assert list(elsewhere.iterdir()) == []
