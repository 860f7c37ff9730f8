"""The tied weights with the pushes: real runs with the parameter service or a box slowed; reads stay in bound."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from resumable import WatchedRun, records, stage_pid, steps_logged, summary
from timing import SCHEDULING_MARGIN_S, wait_until

from protocol.liveness import MISSED_HEARTBEATS

ROOT = Path(__file__).resolve().parents[1]
K, BOUND = 4, 4
SERVICE = K + 1
HEARTBEAT = 2.0
# A worker stopped this long is not yet taken for dead: its silence stays under MISSED_HEARTBEATS intervals.
STOP_S = MISSED_HEARTBEATS * HEARTBEAT - 2 * SCHEDULING_MARGIN_S
# The service slowed: stopped for most of every period, for STOP_S in all.
PERIOD_S, SHARE_STOPPED = 0.2, 0.75


def run_args(mnist, *more: str) -> list[str]:
    return ["--model", "rnn", "--data", str(mnist), "--task", "mnist01", "--mode", "dni", "--boxes", str(K),
            "--epochs", "4", "--log-every", "1", "--heartbeat", str(HEARTBEAT), "--max-staleness", str(BOUND), *more]


def updates(run: WatchedRun) -> dict[int, int]:
    """Each box's updates logged so far."""
    counts = dict.fromkeys(range(1, K + 1), 0)
    for rec in records(run.out):
        if rec["stage"] <= K and "latency_ms" in rec:
            counts[rec["stage"]] += 1
    return counts


def slowed(run: WatchedRun, stage: int, share: float) -> tuple[dict, dict]:
    """The stage's process stopped for `share` of every PERIOD_S over STOP_S once training is under way (share 1:
    stopped throughout); returns each box's updates before and at the end."""
    wait_until(lambda: steps_logged(run.out) >= 30, 60, "step 30", run.proc)
    pid, before = stage_pid(stage), updates(run)
    end = time.monotonic() + STOP_S
    try:
        while time.monotonic() < end:
            os.kill(pid, signal.SIGSTOP)
            time.sleep(PERIOD_S * share if share < 1 else end - time.monotonic())
            os.kill(pid, signal.SIGCONT)
            time.sleep(PERIOD_S * (1 - share))
    finally:
        os.kill(pid, signal.SIGCONT)
    return before, updates(run)


def within_the_bound(run: WatchedRun) -> dict:
    """The run ended well, nothing replaced, and the service answered every read within the bound."""
    assert run.wait() == 0, run.text[-3000:]
    s = summary(run.out)
    assert s["restarts"] == 0, run.text[-3000:]
    service = s["workers"][str(SERVICE)]
    assert 0 < service["max_read_staleness"] <= BOUND, service
    boxes = [r for r in records(run.out) if r["stage"] <= K and "param_staleness" in r]
    assert boxes and all(0 <= r["param_staleness"] <= BOUND for r in boxes)
    return service


@pytest.mark.slow
def test_boxes_update_on_while_the_parameter_service_is_slowed(mnist, tmp_path):
    """Issue 23: with the service stopped three quarters of the time, every box's updates go on, and every read
    stays within the bound; a box pulled only before its first unroll and each evaluation batch."""
    run = WatchedRun(tmp_path / "run", *run_args(mnist))
    before, after = slowed(run, SERVICE, SHARE_STOPPED)
    assert all(after[j] > before[j] for j in before), (before, after)
    service = within_the_bound(run)
    assert service["answers"] == service["pushes"] + service["pulls"] and service["pulls"] <= 4 * K * (1 + 3)


@pytest.mark.slow
def test_boxes_compute_on_their_copies_while_the_parameter_service_is_stopped(mnist, tmp_path):
    """Issue 23: the service stopped outright (within the liveness bound) takes no steps, so no copy grows stale:
    every box goes on updating on its copy, a few batches, until its own pushes waiting there would take the copy
    past the bound (a box that waited for the answer to its push made one update). Batches of 512 keep the
    service ahead of the boxes before the stop, so no box starts it at the bound."""
    run = WatchedRun(tmp_path / "run", *run_args(mnist, "--batch-size", "512"))
    before, after = slowed(run, SERVICE, 1)
    assert all(after[j] - before[j] >= 3 for j in before), (before, after)
    within_the_bound(run)


@pytest.mark.slow
def test_reads_stay_within_the_bound_while_a_box_is_stopped(mnist, tmp_path):
    """Issue 23: the other boxes' updates land while box 2 is stopped; when it reads again, its answer is
    within the bound all the same (fresh weights come with it)."""
    run = WatchedRun(tmp_path / "run", *run_args(mnist, "--window", "8"))
    slowed(run, 2, 1)
    within_the_bound(run)


def test_the_push_benchmark_refuses_a_delay_given_twice(tmp_path):
    """Its jobs' directories are named by their delay: a second job at one would collide with the first."""
    run = subprocess.run([sys.executable, "benchmarks/push.py", "network", "--delays", "0,20,0", "--out",
                          str(tmp_path)], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert run.returncode == 2 and run.stderr.splitlines()[-1] == \
        "push.py: error: --delays: each delay once; run another round into another --out"
