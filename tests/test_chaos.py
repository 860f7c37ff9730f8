"""Chaos: workers SIGKILLed or SIGSTOPped at seeded random moments are replaced, and the run completes."""
import os
import random
import signal

import pytest
from resumable import RESTART_SPREAD, WatchedRun, stage_pid, steps_logged, summary, worker_pids
from timing import FAST, wait_until

from coordinator.cli import main

# 784-64-64-10 cdni on 12,000 MNIST examples, 4 epochs of 94 steps: undisturbed it reaches
# 0.9162-0.918 (five runs: cdni's staleness depends on timing; three kills, 0.9168); evaluation in
# batches of 100 takes long enough to be hit on purpose.
STEPS_PER_EPOCH = 94
JOB = ["--hidden", "64,64", "--train-subset", "12000", "--epochs", "4", "--eval-batch", "100",
       "--checkpoint-every", "10", "--log-every", "5", "--seed", "1"]
pytestmark = pytest.mark.slow   # trainings of 4 and 8 epochs on 12,000 MNIST examples
# Where a kill during evaluation or a checkpoint is noticed (coordinator/control/pipeline.py).
BARRIER_WAITS = ("evaluation results", "for eval batch", "the pipeline to drain", "parameters")


def kill_at(run: WatchedRun, rng: random.Random, n: int, at_barrier: bool) -> None:
    """Kill a seeded random stage's worker a seeded random number of steps into the run's current
    stretch (at_barrier: once the head logged an epoch's last step, so during its evaluation)."""
    since = steps_logged(run.out)
    target = ((since // STEPS_PER_EPOCH) + 1) * STEPS_PER_EPOCH - 1 if at_barrier else since + rng.randint(3, 40)
    wait_until(lambda: steps_logged(run.out) >= target, 60, f"step {target}", run.proc)
    os.kill(stage_pid(rng.randint(1, 3)), signal.SIGKILL)
    if n:   # the restart before the next kill: its workers are up and training again
        wait_until(lambda: run.saw(f"restart {n}: training again"), 60, f"restart {n}", run.proc)


def test_three_kills_are_survived_and_a_fourth_stops_the_run_with_a_resume_hint(mnist, tmp_path):
    rng = random.Random(12)
    assert main(["run", "--data", str(mnist), *JOB, "--out", str(tmp_path / "undisturbed"), *FAST]) == 0
    floor = summary(tmp_path / "undisturbed")["test_accuracy"] - RESTART_SPREAD
    run = WatchedRun(tmp_path / "three", "--data", str(mnist), *JOB, "--max-restarts", "3")
    for n, barrier in ((1, False), (2, True), (3, False)):
        kill_at(run, rng, n, barrier)
    assert run.wait() == 0, run.text
    restarts = [line for line in run.lines if "; restart " in line]
    assert len(restarts) == 3 and any(w in restarts[1] for w in BARRIER_WAITS), restarts
    done = summary(tmp_path / "three")
    assert done["restarts"] == 3 and done["test_accuracy"] >= floor, (done["test_accuracy"], floor)
    assert not worker_pids()

    run = WatchedRun(tmp_path / "four", "--data", str(mnist), *JOB, "--epochs", "8", "--max-restarts", "3")
    for n in (1, 2, 3, 0):
        kill_at(run, rng, n, False)
    assert run.wait() == 1, run.text
    last = run.lines[-1]
    assert last.startswith("dni: error: stage ") and "died with exit code -9" in last, last
    assert f"after 3 restart(s) (--max-restarts 3); resume with: dni run --resume {tmp_path / 'four'}" in last
    assert not worker_pids()


def test_a_stopped_worker_is_declared_lost_after_three_heartbeats_and_replaced(mnist, tmp_path):
    run = WatchedRun(tmp_path / "run", "--data", str(mnist), *JOB, "--epochs", "2", "--max-restarts", "1")
    wait_until(lambda: steps_logged(run.out) >= 30, 60, "step 30", run.proc)
    stopped = stage_pid(2)
    os.kill(stopped, signal.SIGSTOP)
    assert run.wait() == 0, run.text
    lost = next(line for line in run.lines if "; restart 1 of 1" in line)
    assert "stage 2 on " in lost and f"pid {stopped}) lost: no heartbeat for" in lost, lost
    assert summary(tmp_path / "run")["restarts"] == 1
    assert stopped not in worker_pids()   # killed by the coordinator, not left stopped
