"""Restarts that must not give up: workers lost before their hello, several stages lost in one restart,
and a network whose state could not be sent refused at its start."""
import os
import signal
import subprocess
import sys
import time

import pytest
from resumable import assert_same_checkpoint, stage_pid, steps_logged, summary, worker_pids
from timing import FAST, wait_until
from watched import Watched

from coordinator.cli import main
from protocol.kinds import MAX_FRAME_BYTES
from protocol.liveness import REGISTER_TIMEOUT_S

# Locked backprop on the generated task, with a fixed seed: the arithmetic does not depend on timing,
# so a run whose workers were replaced ends with the undisturbed run's weights, bit for bit.
# Each test is a real run; all but the first take more than a few seconds (slow tier).
JOB = ["--mode", "backprop", "--hidden", "32,32", "--epochs", "3", "--seed", "3", "--log-every", "1",
       "--checkpoint-every", "40", "--checkpoint-seconds", "0", "--max-restarts", "2"]
# Loaded by every Python process of the run (PYTHONPATH); in a worker (started with --stage) it counts
# the launches of its stage and, for those listed in DNI_TEST_DIE ("stage:launch,..."), says a last
# word on stderr and dies by SIGKILL before the worker's module is even imported: before its hello.
HOOK = """
import os, signal, sys
argv = sys.orig_argv
if "--stage" in argv:
    stage, n = argv[argv.index("--stage") + 1], 1
    while True:
        try:
            os.close(os.open(os.path.join(os.environ["DNI_TEST_LAUNCHES"], f"{stage}-{n}"), os.O_CREAT | os.O_EXCL))
            break
        except FileExistsError:
            n += 1
    if f"{stage}:{n}" in os.environ["DNI_TEST_DIE"].split(","):
        sys.stderr.write(f"launch {n} of stage {stage} dies before its hello\\n")
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)
"""


class Run(Watched):
    """`dni run JOB` in a child process whose workers obey HOOK; .out is its run directory."""

    def __init__(self, tmp_path, die: str = "", *argv: str):
        hook, self.out = tmp_path / "hook", tmp_path / "run"
        (hook / "launches").mkdir(parents=True)
        (hook / "sitecustomize.py").write_text(HOOK)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")])),
               "DNI_TEST_LAUNCHES": str(hook / "launches"), "DNI_TEST_DIE": die}
        proc = subprocess.Popen([sys.executable, "-m", "coordinator", "run", "--out", str(self.out), *FAST, *JOB,
                                 *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        super().__init__(proc, proc.stderr)


def test_a_worker_killed_at_launch_is_replaced_at_once_and_said_so(tmp_path):
    t0 = time.monotonic()
    run = Run(tmp_path, "2:1")
    assert run.wait() == 0, run.text
    # Not after the registration timeout: its exit is known at once.
    assert time.monotonic() - t0 < REGISTER_TIMEOUT_S
    lost = next(line for line in run.lines if "before it registered" in line)
    assert "stage 2" in lost and "exited with code -9" in lost and "restart 1 of 2" in lost, lost
    assert "launch 1 of stage 2 dies before its hello" in lost, lost   # its last word on stderr
    assert summary(run.out)["restarts"] == 1
    assert not worker_pids()


@pytest.mark.slow
def test_a_replacement_killed_before_it_registers_is_replaced_too(tmp_path):
    run = Run(tmp_path, "2:2")
    wait_until(lambda: steps_logged(run.out) >= 50, 60, "step 50", run.proc)
    os.kill(stage_pid(2), signal.SIGKILL)
    assert run.wait() == 0, run.text
    assert summary(run.out)["restarts"] == 2
    assert not worker_pids()


def kill_two_20_ms_apart(run: Run) -> None:
    """Stages 1 and 3 SIGKILLed 20 ms apart, the coordinator held meanwhile: it notices both at one
    liveness sweep (as a loaded machine makes it do), and its RESET to the second finds it gone."""
    os.kill(run.proc.pid, signal.SIGSTOP)
    try:
        os.kill(stage_pid(1), signal.SIGKILL)
        time.sleep(0.02)
        os.kill(stage_pid(3), signal.SIGKILL)
    finally:
        os.kill(run.proc.pid, signal.SIGCONT)


def hang_one_and_kill_another(run: Run) -> None:
    """Stage 1 hung (SIGSTOP) as stage 2 is SIGKILLed: stage 2's restart waits for stage 1 to rejoin,
    with stage 2's new worker parked, until stage 1 is lost (no heartbeat) in the restart under way."""
    os.kill(stage_pid(1), signal.SIGSTOP)
    os.kill(stage_pid(2), signal.SIGKILL)


@pytest.mark.slow
@pytest.mark.parametrize("lose, beat", [(kill_two_20_ms_apart, "0.5"), (hang_one_and_kill_another, "2")],
                         ids=["killed 20 ms apart", "one lost during the other's restart"])
def test_two_stages_lost_close_together_are_replaced_in_one_restart_and_the_run_ends_bit_exact(lose, beat, tmp_path):
    assert main(["run", *JOB, "--out", str(tmp_path / "undisturbed"), *FAST]) == 0
    # A slow heartbeat leaves the parked worker time to say hello before the hung one is lost.
    run = Run(tmp_path, "", "--heartbeat", beat)
    wait_until(lambda: steps_logged(run.out) >= 50, 60, "step 50", run.proc)
    lose(run)
    assert run.wait() == 0, run.text
    assert summary(run.out)["restarts"] == 2
    assert sum("training again" in line for line in run.lines) == 1, run.text
    assert_same_checkpoint(tmp_path / "undisturbed", run.out)
    assert not worker_pids()


@pytest.mark.slow
def test_a_network_whose_state_is_over_the_message_limit_is_refused_at_its_start(tmp_path):
    # 8193 x 8193 float32: just over MAX_FRAME_BYTES (8192 x 8192 x 4 bytes is the limit itself).
    width = int((MAX_FRAME_BYTES // 4) ** 0.5) + 1
    # Building a layer that wide takes seconds, without a heartbeat meanwhile: beat slowly.
    run = Run(tmp_path, "", "--hidden", f"{width},{width}", "--heartbeat", "10", "--max-restarts", "0")
    try:
        code = run.wait(REGISTER_TIMEOUT_S)
    except subprocess.TimeoutExpired:   # not refused: it trains (for hours); stop it, workers too
        run.proc.terminate()
        code = run.wait()
    assert code == 1, run.text
    last = run.lines[-1]
    assert last.startswith("dni: error: stage 2 ") and f"{width} x {width} float32" in last, last
    assert f"larger than the message limit ({MAX_FRAME_BYTES / 2**20:.0f} MiB)" in last, last
    assert not (run.out / "summary.json").exists() and not worker_pids()
