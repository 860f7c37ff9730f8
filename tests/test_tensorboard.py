"""--tensorboard: a real run's event files, read back with TensorBoard's own reader, across a crash and --resume."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from resumable import WatchedRun, records, stage_pid, steps_logged, summary, worker_pids
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from timing import FAST, SCHEDULING_MARGIN_S, wait_until

from coordinator import checkpoint
from coordinator.cli import main
from coordinator.eventfiles import DIR, FLUSH_S, figures, file_name, percentile
from protocol.liveness import MISSED_HEARTBEATS

# The generated task (no data needed), 157 batches an epoch; every stage reports each step.
JOB = ["--hidden", "16,16", "--tensorboard"]
# The crash tests hold the coordinator stopped for FLUSH_S at a time: its workers must not take it for lost.
HEARTBEAT = 2.0
CRASHING = [*JOB, "--epochs", "6", "--log-every", "5", "--checkpoint-every", "300", "--checkpoint-seconds", "0",
            "--heartbeat", str(HEARTBEAT)]
STAGES = ("stage-1", "stage-2", "stage-3")
SYNTH = ("synthesizer/cosine", "synthesizer/loss", "synthesizer/staleness")
LATENCY = ("update_latency_ms/p50", "update_latency_ms/p99")


def scalars(out, run: str) -> dict[str, list]:
    """{tag: [ScalarEvent, ...]} of one TensorBoard run, every event of all its files, in file order."""
    acc = EventAccumulator(str(out / DIR / run), size_guidance={"scalars": 0})   # 0: keep them all
    acc.Reload()
    return {tag: acc.Scalars(tag) for tag in acc.Tags()["scalars"]}


def steps(out, run: str, tag: str) -> list[int]:
    return [e.step for e in scalars(out, run).get(tag, [])]


def assert_each_step_once(out) -> None:
    for run in ("job", *STAGES):
        for tag, events in scalars(out, run).items():
            got = [e.step for e in events]
            assert got == sorted(set(got)), (run, tag)


def test_a_messages_figures_are_its_records_means_and_latency_percentiles_at_its_last_step():
    rng = np.random.default_rng(0)
    for n in (1, 2, 7, 50):
        values = list(rng.exponential(size=n))
        assert [percentile(values, q) for q in (50, 99)] == pytest.approx(list(np.percentile(values, [50, 99])))
    stage = [{"step": 10, "latency_ms": 1.0, "cos": 0.5, "synth_loss": 2.0, "staleness": 1},
             {"step": 11, "latency_ms": 3.0, "cos": 0.7, "synth_loss": float("nan")},
             {"step": 12, "latency_ms": "slow"}, {"step": True, "cos": 9.0}, {"step": -1, "cos": 9.0}, ["step", 13]]
    # NaN, a string, a step that is no count, a record that is no dict: left out.
    assert figures(2, stage) == {2: {11: {"synthesizer/cosine": pytest.approx(0.6), "update_latency_ms/p50": 2.0,
                                          "update_latency_ms/p99": pytest.approx(2.98)},
                                     10: {"synthesizer/loss": 2.0, "synthesizer/staleness": 1.0}}}
    head = [{"step": 5, "latency_ms": 1.0, "loss": 2.0, "accuracy": 0.25}, {"step": 6, "latency_ms": 1.0, "loss": 1.0}]
    assert figures(3, head) == {0: {6: {"loss/train": 1.5}, 5: {"accuracy/train": 0.25}},
                                3: {6: {"update_latency_ms/p50": 1.0, "update_latency_ms/p99": 1.0}}}
    coordinator = [{"step": 99, "samples": 1000, "train_seconds": 4.0, "val_accuracy": 0.9, "val_loss": 0.3}]
    assert figures(0, coordinator) == {0: {99: {"accuracy/validation": 0.9, "loss/validation": 0.3,
                                                "samples_per_second": 250.0}}}


def test_a_runs_event_files_hold_the_jobs_and_each_stages_curves(tmp_path):
    out = tmp_path / "run"
    job = [*JOB, "--log-every", "1", "--epochs", "2", "--eval-every", "100"]
    assert main(["run", *job, "--out", str(out), *FAST]) == 0
    assert sorted(os.listdir(out / DIR)) == ["job", *STAGES]
    job = scalars(out, "job")
    assert sorted(job) == ["accuracy/test", "accuracy/train", "accuracy/validation", "loss/test", "loss/train",
                           "loss/validation", "samples_per_second"]
    for stage in STAGES:
        assert sorted(scalars(out, stage)) == sorted(LATENCY + (SYNTH if stage != "stage-3" else ()))
    # The figures are metrics.jsonl's, at its steps: one event per record (--log-every 1).
    recs = records(out)
    for stage, run in enumerate(STAGES, 1):
        assert steps(out, run, LATENCY[0]) == sorted(r["step"] for r in recs if r["stage"] == stage), run
        latency = {r["step"]: r["latency_ms"] for r in recs if r["stage"] == stage}
        assert all(e.value == pytest.approx(latency[e.step], rel=1e-6) for e in scalars(out, run)[LATENCY[1]])
    validation = [r for r in recs if r["stage"] == 0]
    assert [(e.step, pytest.approx(e.value, rel=1e-6)) for e in job["accuracy/validation"]] == \
        [(r["step"], r["val_accuracy"]) for r in validation]
    done = summary(out)
    assert [e.step for e in job["accuracy/test"]] == [done["steps"] - 1]   # with a validation split: at the end
    assert job["accuracy/test"][0].value == pytest.approx(done["test_accuracy"], rel=1e-6)
    assert job["samples_per_second"][-1].value == pytest.approx(done["samples_per_second"], rel=1e-6)
    assert_each_step_once(out)


@pytest.mark.slow
def test_dni_coordinator_writes_them_too(tmp_path):
    """`dni coordinator --tensorboard` with `dni worker`s that connect to it, as on other hosts."""
    out, control = tmp_path / "run", f"ipc://{tmp_path}/control"
    coordinator = WatchedRun(out, *JOB, "--epochs", "1", "--bind", control, "--workers", "3", command="coordinator")
    workers = [subprocess.Popen([sys.executable, "-m", "coordinator", "worker", "--coordinator", control],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in STAGES]
    assert coordinator.wait() == 0, coordinator.text
    assert all(w.wait(30) == 0 for w in workers)
    assert sorted(os.listdir(out / DIR)) == ["job", *STAGES]
    assert steps(out, "job", "accuracy/test") == [summary(out)["steps"] - 1]
    assert all(steps(out, run, LATENCY[0])[-1] == summary(out)["steps"] - 1 for run in STAGES)


def flushed_past(out, step: int) -> bool:
    """Every stage's event file holds steps after `step`."""
    return all(os.path.isdir(out / DIR / run) and max(steps(out, run, LATENCY[0]), default=-1) > step
               for run in STAGES)


def held_with_orphans(proc, out) -> int:
    """Stop the coordinator where its event files hold steps after its last checkpoint (which a resume or a
    restart writes again); that checkpoint's step. Held FLUSH_S, it flushes at its next write."""
    while True:
        wait_until(lambda: (out / checkpoint.MODEL_FILE).exists() and
                   steps_logged(out) > checkpoint.latest(out).progress["step"] + 20, 60, "steps after one", proc)
        proc.send_signal(signal.SIGSTOP)
        time.sleep(FLUSH_S)
        at = checkpoint.latest(out).progress["step"]
        proc.send_signal(signal.SIGCONT)
        wait_until(lambda: flushed_past(out, at + 10), 30, "their events", proc)
        proc.send_signal(signal.SIGSTOP)
        if checkpoint.latest(out).progress["step"] == at:
            return at
        proc.send_signal(signal.SIGCONT)   # checkpointed meanwhile: once more


@pytest.mark.slow
def test_a_resume_after_a_crash_writes_each_step_once_and_goes_on_from_the_checkpoint(tmp_path):
    """SIGKILLed, the coordinator leaves event files with steps after its last checkpoint; the resumed run
    writes those steps again: the files must hold each step once, the new one from the checkpoint's step."""
    out = tmp_path / "run"
    run = WatchedRun(out, *CRASHING)
    resumed_at = held_with_orphans(run.proc, out)
    run.proc.send_signal(signal.SIGKILL)
    assert run.wait() == -signal.SIGKILL
    # Orphaned, they take the coordinator for lost after MISSED_HEARTBEATS intervals, and exit.
    wait_until(lambda: not worker_pids(), MISSED_HEARTBEATS * HEARTBEAT + SCHEDULING_MARGIN_S, "the workers to exit")
    before = {run: steps(out, run, LATENCY[0]) for run in STAGES}
    torn = out / DIR / "stage-1" / file_name(0)   # as a crash mid-write leaves it: its last event cut short
    os.truncate(torn, torn.stat().st_size - 3)

    assert main(["run", "--resume", str(out), *FAST, "--heartbeat", str(HEARTBEAT)]) == 0
    assert_each_step_once(out)
    total = summary(out)["steps"]
    for run in STAGES:
        files = sorted(os.listdir(out / DIR / run))
        assert files[-1] == file_name(resumed_at), files   # the resumed run's file, from the checkpoint's step
        got = steps(out, run, LATENCY[0])
        assert got[-1] == total - 1 and [s for s in got if s < resumed_at] == \
            [s for s in before[run] if s < resumed_at]
    assert steps(out, "job", "accuracy/test")[-1] == total - 1


@pytest.mark.slow
def test_a_worker_replaced_mid_run_leaves_each_step_once(tmp_path):
    """Stage 2 SIGKILLed: every stage goes back to the last checkpoint in the same coordinator, and the
    steps since are written again, into new files."""
    out = tmp_path / "run"
    run = WatchedRun(out, *CRASHING, "--max-restarts", "1")
    held_with_orphans(run.proc, out)
    os.kill(stage_pid(2), signal.SIGKILL)
    run.proc.send_signal(signal.SIGCONT)
    assert run.wait() == 0, run.text
    assert summary(out)["restarts"] == 1
    assert_each_step_once(out)
    assert all(len(os.listdir(out / DIR / run)) == 2 for run in STAGES)
    assert steps(out, "stage-2", LATENCY[0])[-1] == summary(out)["steps"] - 1


def test_without_tensorboardx_the_option_is_a_one_line_error(tmp_path):
    """tensorboardX missing (its import made to fail in the child): exit 2, one line saying how to install it,
    no run directory made."""
    code = ("import sys; sys.modules['tensorboardX'] = None; from coordinator.cli import main; "
            f"sys.exit(main({json.dumps(['run', '--tensorboard', '--out', str(tmp_path / 'run'), *FAST])}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "pip install 'dni-synthgrad[tensorboard]'" in done.stderr, done.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small filesystem needs root")
def test_a_full_disk_under_the_event_files_is_one_line_and_training_goes_on(tmp_path):
    """RUN_DIR/tensorboard on a filesystem that is full: the run says so once and ends as it would have."""
    out = tmp_path / "run"
    (out / DIR).mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(out / DIR)], check=True)
    try:
        with pytest.raises(OSError):   # fill it
            with open(out / DIR / "filler", "wb") as f:
                f.write(b"\0" * (1 << 20))
                f.flush()
        run = WatchedRun(out, *JOB, "--epochs", "2")
        assert run.wait() == 0, run.text
        said = [line for line in run.lines if "--tensorboard" in line]
        assert len(said) == 1 and "No space left on device" in said[0] and str(out / DIR) in said[0], run.text
        assert summary(out)["steps"] == 314
    finally:
        subprocess.run(["umount", str(out / DIR)], check=True)
