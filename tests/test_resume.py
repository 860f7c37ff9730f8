"""Resuming: SIGTERM partway, `--resume`, and the run ends as the uninterrupted one did, bit for bit."""
import os
import random
import signal
import time

import pytest
from resumable import (
    WatchedRun,
    assert_same_checkpoint,
    records,
    stage_pid,
    start,
    steps_logged,
    stopped_by_sigterm,
    summary,
    worker_pids,
)
from timing import FAST, wait_until

from coordinator import checkpoint
from coordinator.cli import main
from protocol.liveness import ABORT_REAP_TIMEOUT_S

# Locked backprop with a fixed seed: the arithmetic does not depend on timing (see test_multihost).
FF = ["--mode", "backprop", "--optimizer", "adam", "--lr", "1e-3", "--hidden", "32,32", "--train-subset", "1536",
      "--epochs", "6", "--seed", "4", "--log-every", "1", "--checkpoint-every", "0", "--checkpoint-seconds", "0"]
RNN = ["--model", "rnn", "--task", "mnist01-chunks", "--mode", "backprop", "--boxes", "4", "--steps-per-box", "2",
       "--units", "16", "--train-subset", "768", "--batch-size", "64", "--epochs", "6", "--lr", "3e-3", "--seed", "5",
       "--log-every", "1", "--checkpoint-every", "0", "--checkpoint-seconds", "0"]


@pytest.mark.parametrize("job", [FF, RNN], ids=["feedforward", "recurrent-tied"])
def test_sigterm_then_resume_ends_with_the_uninterrupted_runs_weights(job, mnist, tmp_path):
    job = ["--data", str(mnist), *job]
    assert main(["run", *job, "--out", str(tmp_path / "whole"), *FAST]) == 0
    part = tmp_path / "part"
    err, stopped = stopped_by_sigterm(part, *job)
    last = err.strip().splitlines()[-1]
    assert f"resume with: dni run --resume {part}" in last, err
    total = summary(tmp_path / "whole")["steps"]
    assert 20 <= stopped["step"] < total and not (part / "summary.json").exists()

    assert main(["run", "--resume", str(part), *FAST]) == 0
    assert_same_checkpoint(tmp_path / "whole", part)
    whole, resumed = summary(tmp_path / "whole"), summary(part)
    assert resumed["history"] == whole["history"] and resumed["steps"] == total
    assert resumed["resumes"] == 1 and resumed["restarts"] == 0
    # metrics.jsonl carries on: every stage's records of each step once, none missing.
    for stage in {r["stage"] for r in records(tmp_path / "whole")}:
        steps = sorted(r["step"] for r in records(part) if r["stage"] == stage)
        want = sorted(r["step"] for r in records(tmp_path / "whole") if r["stage"] == stage)
        assert steps == want, stage


def test_resume_refuses_what_it_cannot_continue(mnist, tmp_path, capsys):
    assert main(["run", "--resume", str(tmp_path / "nothing")]) == 2
    assert capsys.readouterr().err.strip() == f"dni: error: no checkpoint: {tmp_path}/nothing/model.npz does not exist"
    run = tmp_path / "run"
    job = ["--data", str(mnist), "--hidden", "8", "--train-subset", "256", "--epochs", "1", *FAST]
    assert main(["run", *job, "--out", str(run)]) == 0
    capsys.readouterr()
    assert main(["run", "--resume", str(run)]) == 2
    assert "the run has done all its 1 epochs; give a larger --epochs" in capsys.readouterr().err
    assert main(["run", "--resume", str(run), "--epochs", "2", "--lr", "0.5"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--lr 0.5: the run in" in err and "keeps its options" in err
    assert main(["run", "--resume", str(run), "--epochs", "2", *FAST]) == 0   # a larger --epochs goes on
    assert [h["epoch"] for h in summary(run)["history"]] == [1, 2]


def test_a_corrupt_newest_checkpoint_falls_back_to_the_previous_and_says_so(mnist, tmp_path, capsys, caplog):
    run = tmp_path / "run"
    job = ["--data", str(mnist), "--hidden", "8", "--train-subset", "512", "--epochs", "2", "--checkpoint-every",
           "3", *FAST]
    assert main(["run", *job, "--out", str(run)]) == 0
    previous = checkpoint.read(run / checkpoint.PREVIOUS_FILE).progress["step"]
    assert previous == 6   # checkpoints at steps 3, 6 and (the end) 8
    newest = run / checkpoint.MODEL_FILE
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])   # torn, as by a crash mid-write
    capsys.readouterr()
    assert main(["eval", str(run)]) == 0
    said = [r.getMessage() for r in caplog.records if r.name == "dni"]   # logged to stderr: "dni: ..."
    assert said == [f"corrupt checkpoint {newest}: File is not a zip file; using the previous checkpoint "
                    f"{run / checkpoint.PREVIOUS_FILE} (step 6) instead"]
    assert "checkpoint step 6" in capsys.readouterr().out
    caplog.clear()
    assert main(["run", "--resume", str(run), "--epochs", "3", *FAST]) == 0
    assert any("using the previous checkpoint" in r.getMessage() for r in caplog.records)
    assert summary(run)["steps"] == 3 * 4 and summary(run)["resumes"] == 1


def test_ctrl_c_checkpoints_and_stops_and_twice_stops_at_once(mnist, tmp_path):
    job = ["--data", str(mnist), "--hidden", "32,32", "--epochs", "50", "--log-every", "5"]
    once = WatchedRun(tmp_path / "once", *job)
    wait_until(lambda: steps_logged(once.out) >= 10, 60, "step 10", once.proc)
    once.proc.send_signal(signal.SIGINT)
    assert once.wait(30) == 130
    assert "stopped by SIGINT at step " in once.lines[-1] and f"checkpoint {once.out}/model.npz" in once.lines[-1]
    assert once.lines[-1].endswith(f"resume with: dni run --resume {once.out}")
    assert not worker_pids()

    # A stopped worker holds up the barrier the first Ctrl-C waits for: the second ends it all at once.
    twice = WatchedRun(tmp_path / "twice", *job)
    wait_until(lambda: steps_logged(twice.out) >= 10, 60, "step 10", twice.proc)
    os.kill(stage_pid(2), signal.SIGSTOP)
    twice.proc.send_signal(signal.SIGINT)
    time.sleep(0.3)   # signals of one kind do not queue: the second must come after the first is taken
    start = time.monotonic()
    twice.proc.send_signal(signal.SIGINT)
    assert twice.wait(30) == 130
    # Killed without the grace it gives a worker that said goodbye (ABORT_REAP_TIMEOUT_S), let alone the wait
    # for the stopped one's goodbye (ABORT_STOP_TIMEOUT_S): this bound cannot be longer and still tell them apart.
    assert "interrupted twice: stopped at once" in twice.lines[-1] and time.monotonic() - start < ABORT_REAP_TIMEOUT_S
    assert not worker_pids()


@pytest.mark.slow
def test_a_coordinator_killed_at_any_moment_leaves_a_checkpoint_to_resume_from(mnist, tmp_path):
    """SIGKILL, no handler runs: with a checkpoint every step, most kills land in the middle of a write."""
    run, rng = tmp_path / "run", random.Random(3)
    # Long enough (8 x 24 steps) that no attempt can finish before its kill lands on a loaded machine.
    epochs = 8
    job = ["--data", str(mnist), "--hidden", "32,32", "--train-subset", "3000", "--epochs", str(epochs),
           "--checkpoint-every", "1"]
    proc = start(run, *job)
    for resumes in range(3):
        # Into this attempt's own training: it has written checkpoints of its own.
        wait_until(lambda: (run / checkpoint.MODEL_FILE).exists()
                   and checkpoint.latest(run).progress["resumes"] == resumes, 60, "a checkpoint", proc)
        time.sleep(rng.uniform(0.05, 0.3))
        proc.kill()
        proc.communicate()
        # Its workers leave after three silent heartbeats; meanwhile the checkpoint must load.
        assert checkpoint.latest(run).progress["step"] > 0
        proc = start(run, "--resume", str(run), command="run")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert summary(run)["resumes"] == 3 and summary(run)["steps"] == epochs * 24
