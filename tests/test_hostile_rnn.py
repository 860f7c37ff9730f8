"""Hostile messages to a running recurrent job: time boxes and the parameter service drop what does not fit."""
import json

import numpy as np
import pytest
from hostile_job import Job
from resumable import steps_logged

from coordinator.bench import fuzz
from coordinator.cli import main
from coordinator.data.tasks import n_inputs
from protocol import Kind, Message, encode, window
from protocol.wireconfig import WireConfig
from workers.numerics.paramstore import ParamStore
from workers.roles.guard import Window

K, T = 3, 3                 # time boxes, steps in each; the service is stage K + 1
SEQ, UNITS = K * T, 16
COPY = ["--model", "rnn", "--task", "copy", "--mode", "dni", "--boxes", str(K), "--steps-per-box", str(T),
        "--copy-length", "3", "--units", str(UNITS), "--copy-batches", "100", "--seed", "1"]   # needs no data


def msg(kind, src, b, meta=None, **arrays):
    return encode(Message(kind, src, b, meta or {}, arrays))


def summary(job: Job) -> dict:
    return json.loads((job.out / "summary.json").read_text())


def dropped(job: Job, stage: int) -> dict:
    return summary(job)["workers"][str(stage)]["dropped"]


def test_forged_slices_states_and_weights_are_dropped_and_no_box_crashes(tmp_path):
    """662df88: a rank-2 slice "from the coordinator" (an EVAL there; evaluation ids are secret now, so a FORWARD
    here) killed box 1 (input_fault read x.shape[2]), and each replacement the same way; a state whose running
    stats no integer holds killed the last box at its DONE. Each is sent under every id near the run's step,
    so that some fall in the window whatever the step is by then."""
    job = Job(tmp_path, *COPY, "--epochs", "6").training()
    b = steps_logged(job.out)
    near = range(b, b + 200)
    n, f32 = 128, np.float32
    width = n_inputs("copy", SEQ)
    per_step = np.full((n, SEQ), -1, np.int64)
    rank2 = [msg(Kind.FORWARD, "coordinator", i, x=np.zeros((T, n), f32), y=np.zeros(T, np.int64)) for i in near]
    job.send(job.inbox[1], rank2 + [
        msg(Kind.EVAL, "coordinator", 0, x=np.zeros((T, n), f32), y=np.zeros(T, np.int64)),
        msg(Kind.FORWARD, "coordinator", b + 3, x=np.zeros((T, n, width + 1), f32), y=per_step),
        msg(Kind.FORWARD, "coordinator", b + 3, x=np.zeros((T, n, width), f32), y=per_step[:, :2]),
        msg(Kind.GRAD, "box-2", b + 1, g=np.zeros((n, UNITS), f32))] + [
        msg(Kind.GRAD, "box-2", i, g=np.zeros((n, UNITS), f32), a=np.zeros((n, UNITS), f32)) for i in near])  # no --aux
    state = np.zeros((n, UNITS), f32)
    job.send(job.inbox[2], [msg(Kind.FORWARD, "box-1", i, h=state, y=per_step, stats=np.array([0, 1e30, 1e30]))
                            for i in near] + [
        msg(Kind.FORWARD, "box-1", b + 3, h=state[:, :3], y=per_step, stats=np.zeros(3)),
        msg(Kind.FORWARD, "box-1", b + 3, h=state, y=np.zeros(n, np.int64), stats=np.zeros(3))])
    job.send(job.inbox[K + 1], [msg(Kind.PUSH, "box-1", b + 1, {"version": 0}, **{"cell.Wh": np.zeros((3, 3), f32)}),
                                msg(Kind.PUSH, "box-1", b + 1, {"version": 0},
                                    **{"cell.Wh": np.full((UNITS, UNITS), np.nan, f32)})])
    code, err = job.finish()
    assert code == 0, err[-3000:]
    assert summary(job)["restarts"] == 0, err[-3000:]   # no box crashed and was replaced
    workers = summary(job)["workers"]
    assert dropped(job, 1).get("input of the wrong shape or dtype", 0) >= 1, workers
    assert dropped(job, 1).get("a synthetic gradient to predict, and no --aux", 0) >= 1, workers
    assert dropped(job, 2).get("running stats out of range", 0) >= 1, workers
    assert sum(dropped(job, 1).values()) >= 2 * len(near) + 4 and sum(dropped(job, 2).values()) >= len(near), workers
    assert sum(dropped(job, K + 1).values()) >= 2, workers


def test_a_crash_that_a_restart_hid_fails_the_fuzz_bench(tmp_path, monkeypatch, capsys):
    """662df88: `dni bench fuzz` exited 0 after reporting "1 CRASH"."""
    replaced = {"messages_per_socket": 1, "fuzzed": {"exit": 0, "hang": False, "restarts": 1, "accuracy": 0.9}}
    monkeypatch.setattr(fuzz, "run", lambda *args, **kw: replaced)
    assert main(["bench", "fuzz", "--out", str(tmp_path), "--job", " ".join(COPY)]) == 1
    assert "verdict: CRASH: 1 worker(s) replaced" in capsys.readouterr().out


def test_the_fuzz_takes_a_recurrent_jobs_names_and_widths():
    widths, members = fuzz.target(COPY + ["--batch-size", "64"])
    assert members == ["coordinator", "box-1", "box-2", "box-3", "params"]
    assert {n_inputs("copy", SEQ), UNITS, T, 64} <= set(widths)


@pytest.mark.slow
def test_fuzzing_every_socket_of_a_recurrent_job_changes_nothing_but_the_counters(tmp_path, mnist):
    """Issue 20: the semantic fuzz against `--model rnn` (4 boxes, the service): no crash, the same accuracy.
    662df88 stalled here: forged barrier tokens had set box 4's mark, and the real ones fell out of its window."""
    args = ["--model", "rnn", "--data", str(mnist), "--task", "mnist01", "--mode", "dni", "--units", "16",
            "--epochs", "10", "--seed", "0", "--heartbeat", "0.5"]   # outlasts the fuzz
    result = fuzz.run(tmp_path, args, 500, seed=3)
    print(fuzz.report(result))   # the figures for the closing note (pytest -s)
    calm, fuzzed = result["undisturbed"], result["fuzzed"]
    assert fuzz.verdict(result) is None and calm["exit"] == 0, fuzz.report(result) + fuzzed["stderr"]
    assert abs(fuzzed["accuracy"] - calm["accuracy"]) < 0.02, fuzz.report(result)
    assert result["sent"] == 6 * 500 and fuzzed["dropped_total"] >= 0.95 * result["sent"], fuzz.report(result)
    assert fuzzed["stderr_lines"] < 60, fuzzed["stderr"]


def test_forged_pushes_do_not_walk_the_parameter_services_window_away(tmp_path):
    """Issue 25 (662df88: 0.4411 against 0.9995): pushes each within the window of the last moved the service's
    mark away from the boxes' real stream, whose pushes were then dropped. Only the forged ones may be."""
    span = window.id_span(window.in_flight(2))   # the default --window
    job = Job(tmp_path, *COPY, "--epochs", "6").training()
    b = steps_logged(job.out)
    junk = {"extra": np.zeros(3, np.float32)}
    forged = [msg(Kind.PUSH, "box-1", b + i * (span - 1), {"version": 0}, **junk) for i in range(1, 200)]
    sent = job.send(job.inbox[K + 1], forged)
    code, err = job.finish()
    assert code == 0, err[-3000:]
    service = summary(job)["workers"][str(K + 1)]
    assert sum(service["dropped"].values()) <= sent, service   # no real push among them


def test_a_forged_first_id_does_not_set_a_streams_mark():
    """662df88: the first id of a stream set its mark, so a forged barrier token far ahead, taken first, left
    the real tokens (0, 1, ...) behind; enough of them drop out of the window, and the run stalls."""
    w = Window(span=8, start=0)
    for forged in range(7, 13):                       # from an id inside the window of a fresh stream, on
        if w.admits("box-3", Kind.SYNC, forged):
            w.took("box-3", Kind.SYNC, forged)
    for token in range(20):                           # the real barrier tokens
        assert w.admits("box-3", Kind.SYNC, token), token
        w.took("box-3", Kind.SYNC, token)
    assert w.admits("box-1", Kind.PULL, 1) and w.took("box-1", Kind.PULL, 1) == 1   # pulls count from 1


def test_pushed_weights_of_the_wrong_shape_or_version_are_dropped_and_counted(tmp_path):
    """Issue 23: weights the service sends a box (the answer to its push) must be the whole tied set, of its
    shapes, and no older than the copy the box holds; else the box drops them, counts them, and trains on."""
    names = ParamStore(WireConfig(seed=0, cell="tanh", n_in=3, units=4, n_classes=2, optimizer="adam", lr=1e-2,
                                  schedule="constant", total_steps=1, boxes=K, mode="dni", model="rnn",
                                  synth_lr=0.0, synth_hidden=0, log_every=1, cache=1)).params()
    job = Job(tmp_path, *COPY, "--epochs", "6").training()
    wrong_shape = {name: np.zeros(3, np.float32) for name in names}
    ids = range(1, 400)   # the service's stream to box 2 counts from 1, a message or two a batch
    sent = job.send(job.inbox[2], [msg(Kind.PARAMS, "params", i, {"version": 10**9, "staleness": 0},
                                       **wrong_shape) for i in ids] +
                    [msg(Kind.PARAMS, "params", i, {"version": 0, "staleness": 0}, **wrong_shape)
                     for i in ids])
    code, err = job.finish()
    assert code == 0 and sent == 2 * len(ids), err[-3000:]
    assert summary(job)["restarts"] == 0, err[-3000:]
    drops = dropped(job, 2)
    assert drops.get("weights of the wrong name, shape or dtype", 0) >= 1, drops
    assert drops.get("weights older than the copy held", 0) >= 1, drops
