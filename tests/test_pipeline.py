"""Multi-process runs on the generated task: transparency, checkpoints, bad input, worker faults."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import zmq
from resumable import stage_pid
from timing import FAST, training, wait_until

from coordinator import checkpoint, launch, plans
from coordinator.cli import main
from coordinator.config import Config
from coordinator.control import Hub, Membership, Pipeline
from coordinator.data import batches, generated_task
from protocol import Kind, Message, encode
from protocol.wireconfig import WireConfig
from workers.numerics.reference import build_network, step


@pytest.mark.parametrize("credit", ["link", "coordinator"])
def test_backprop_over_processes_matches_single_process_numpy(tmp_path, credit):
    """Transparency: locked backprop on 3 processes gives the reference's weights."""
    args = ["run", "--mode", "backprop", "--optimizer", "sgd", "--lr", "0.05", "--hidden", "32,16",
            "--train-subset", "1280", "--epochs", "2", "--seed", "3", "--out", str(tmp_path), "--credit", credit,
            *FAST]
    assert main(args) == 0
    cfg, states = checkpoint.load(tmp_path)
    data = generated_task(seed=3).first(1280).centred()   # what the run trained on, by default
    net = build_network(WireConfig.from_meta(cfg))
    rng = np.random.default_rng(3)
    b = 0
    for _ in range(2):
        for x, y in batches(data.x_train, data.y_train, 128, rng):
            step(net, b, x, y)
            b += 1
    assert cfg["step"] == b == 20
    for stage in net:
        for name, want in stage.state().items():
            np.testing.assert_allclose(states[stage.index][name], want, rtol=1e-5, atol=1e-7)


def test_run_writes_metrics_summary_and_a_checkpoint_that_eval_reproduces(tmp_path, capsys):
    began = time.time()
    assert main(["run", "--mode", "cdni", "--hidden", "64,64", "--epochs", "1", "--window", "3",
                 "--out", str(tmp_path), "--log-every", "10", *FAST]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    for key in ("mode", "stages", "epochs", "test_accuracy", "train_seconds", "samples_per_second"):
        assert key in summary
    assert summary["stages"] == 3 and summary["mode"] == "cdni"
    assert set(summary["update_latency_ms"]) == {"1", "2", "3"}
    for lat in summary["update_latency_ms"].values():
        assert 0 < lat["p50"] <= lat["p99"]
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert {r["stage"] for r in lines} == {1, 2, 3}
    hidden = [r for r in lines if r["stage"] == 2]
    assert all(-1 <= r["cos"] <= 1 and r["staleness"] >= 0 and r["synth_loss"] >= 0 for r in hidden)
    assert all("loss" in r for r in lines if r["stage"] == 3)
    # Each update's wall-clock time (`dni bench stall` reads update rates from it): a stage's, in its batches' order.
    for k in (1, 2, 3):
        times = [r["time"] for r in sorted((r for r in lines if r["stage"] == k), key=lambda r: r["step"])]
        assert len(times) == summary["steps"] and began < times[0] <= times[-1] < time.time() and times == sorted(times)
    capsys.readouterr()
    assert main(["eval", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert f"test accuracy {summary['test_accuracy']:.4f}" in printed


def test_link_credit_trains_and_no_stage_sends_more_than_a_window_past_its_targets(tmp_path):
    """Per-link credit: stage k sends b + W on only once the target for b came back, so a target
    is at most W - 1 of the stage's own updates late; and the window is used, not left idle."""
    window = 3
    assert main(["run", "--mode", "cdni", "--credit", "link", "--window", str(window), "--hidden", "64,64",
                 "--epochs", "1", "--seed", "1", "--log-every", "50",
                 "--out", str(tmp_path), *FAST]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = summary["steps"]
    assert steps == 157 and len([r for r in lines if r["stage"] == 3]) == steps   # a report per batch
    for k in (1, 2):
        staleness = [r["staleness"] for r in lines if r["stage"] == k]
        assert len(staleness) == steps and max(staleness) == window - 1, (k, staleness)
    assert summary["test_accuracy"] > 0.5, summary["test_accuracy"]   # chance: 0.1


def test_the_generated_task_needs_the_hidden_layers(tmp_path):
    """The default task is not linearly solvable: the 3-stage net beats a linear model clearly."""
    assert main(["run", "--mode", "backprop", "--epochs", "3", "--out", str(tmp_path / "mlp"), *FAST]) == 0
    mlp = json.loads((tmp_path / "mlp" / "summary.json").read_text())["test_accuracy"]
    data = generated_task(seed=0)
    from workers.numerics.layers import Head
    from workers.numerics.optimizers import Adam
    head = Head(data.n_features, data.n_classes, np.random.default_rng(0))
    opt = Adam(head.params, 3e-3)
    rng = np.random.default_rng(0)
    for _ in range(10):
        for x, y in batches(data.x_train, data.y_train, 128, rng):
            opt.step(head.params, head.loss_and_grads(x, y)[2])
    linear = head.evaluate(data.x_test, data.y_test)[1] / len(data.y_test)
    assert mlp > linear + 0.1, (mlp, linear)


@pytest.mark.parametrize("argv, words", [
    (["--mode", "sideways"], "--mode: 'sideways'"),
    (["--hidden", "256,x"], "--hidden"),
    (["--hidden", "0"], "--hidden"),
    (["--epochs", "0"], "--epochs"),
    (["--classes", "3"], "--classes"),
    (["--lr", "-1"], "--lr"),
    (["--data", "/nonexistent/mnist"], "train-images-idx3-ubyte"),
])
def test_bad_options_give_one_line_errors(argv, words, capsys, tmp_path):
    assert main(["run", "--out", str(tmp_path), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dni: error:") and words in err and "\n" not in err


def test_toml_config_is_read_and_flags_override_it(tmp_path, capsys):
    good = tmp_path / "run.toml"
    good.write_text('mode = "backprop"\nhidden = [16, 16]\nepochs = 1\ntrain_subset = 512\nprogress = false\n')
    assert main(["run", "--config", str(good), "--mode", "dni", "--out", str(tmp_path / "r")]) == 0
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["mode"] == "dni" and summary["sizes"][1:3] == [16, 16]
    bad = tmp_path / "bad.toml"
    bad.write_text("epochz = 3\n")
    assert main(["run", "--config", str(bad)]) == 2
    assert "unknown option 'epochz'" in capsys.readouterr().err


def train_past_rogue_messages(rogue_frames: dict[int, list[list]]) -> tuple[dict, list]:
    """A 3-stage run on the generated task whose stage k first gets rogue_frames[k] on its inbox;
    returns every stage's goodbye counters and the DONEs of the 10 real batches."""
    cfg = Config(hidden="16,16", epochs=1, train_subset=640, heartbeat=0.5).validate()
    data = generated_task(seed=0)
    ctx = zmq.Context()
    done = []
    plan = plans.for_config(cfg, data)
    hub = Hub(ctx, "tcp://127.0.0.1:0", cfg.heartbeat)
    coord = Membership(hub, 3)
    pipe = Pipeline(hub, coord, 4, on_done=done.append, credit=plan.wire.credit)
    procs = coord.procs = launch.spawn(hub.endpoint, 3)
    try:
        coord.register(30)
        coord.assign(plan.roles(), plan.wire.to_meta(), plan.links())
        for stage, messages in rogue_frames.items():
            rogue = ctx.socket(zmq.PUSH)
            rogue.connect(coord.by_stage()[stage].hello["endpoint"])
            for frames in messages:
                rogue.send_multipart(frames)
            rogue.close(linger=1000)
        x, y = data.x_train[:640], data.y_train[:640]
        for b, (xb, yb) in enumerate(batches(x, y, 64, np.random.default_rng(0))):
            pipe.send_batch(Kind.FORWARD, b, xb, yb)
        pipe.sync()
        byes = coord.stop()
    finally:
        pipe.close()
        hub.close()
        launch.reap(procs.values())
        ctx.term()
    return byes, done


def test_a_worker_counts_malformed_messages_and_keeps_training():
    good = encode(Message(Kind.FORWARD, "rogue", 10**9, {}, {"x": np.ones((2, 32), np.float32)}))
    nasty = [[b"\xc1not msgpack"], [good[0]], [good[0], b"short"], [b"\x00" * 70000],
             [good[0].replace(b"float32", b"float64"), good[1]]]
    byes, done = train_past_rogue_messages({1: nasty})
    assert byes[1]["bad_messages"] == len(nasty)
    assert len(done) == 10  # every real batch after the garbage was trained on


def test_messages_that_break_their_kinds_schema_are_counted_and_training_goes_on():
    """Well-formed messages a handler could not use (a missing array or field, a wrong rank or
    dtype) are rejected at decode: counted, never handed to the stage."""
    x, y, g = np.ones((2, 16), np.float32), np.zeros(2, np.int64), np.ones((2, 16), np.float32)
    wrong = [Message(Kind.FORWARD, "rogue", 10**9, {}, {"x": x}),                       # no labels
             Message(Kind.FORWARD, "rogue", 10**9, {}, {"x": x.astype(np.int32), "y": y}),
             Message(Kind.GRAD, "rogue", 10**9, {}, {}),                                # no gradient
             Message(Kind.GRAD, "rogue", 10**9, {}, {"g": g[None]}),                    # rank 3
             Message(Kind.GRAD, "rogue", 10**9, {}, {"g": g, "extra": g}),
             Message(Kind.PULL, "rogue", 10**9, {"have": 0}, {}),                       # no need, bound
             Message(Kind.DONE, "rogue", 10**9, {"loss": "low", "correct": 1, "n": 2}, {})]
    frames = [[bytes(memoryview(f)) for f in encode(m)] for m in wrong]
    byes, done = train_past_rogue_messages({1: frames, 2: frames})
    assert byes[1]["bad_messages"] == byes[2]["bad_messages"] == len(wrong)
    assert len(done) == 10


def dni_run(tmp_path, *extra):
    cmd = [sys.executable, "-m", "coordinator", "run", "--epochs", "50", "--out", str(tmp_path),
           "--hidden", "64,64,64", *FAST, *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_killed_worker_is_named_and_everything_else_exits(tmp_path):
    proc = dni_run(tmp_path, "--max-restarts", "0")
    wait_until(lambda: training(tmp_path), 30, "the first step", proc)
    os.kill(stage_pid(2), signal.SIGKILL)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 1
    last = err.strip().splitlines()[-1]
    assert last.startswith("dni: error: stage 2") and "died" in last


def test_a_killed_parameter_service_is_named_for_what_it_does(tmp_path):
    """It is stage K+1 to the launcher, but "stage 3" would send a user looking for a third box."""
    proc = subprocess.Popen([sys.executable, "-m", "coordinator", "run", "--model", "rnn", "--task", "copy",
                             "--mode", "dni", "--boxes", "2", "--steps-per-box", "3", "--copy-length", "2",
                             "--epochs", "50", "--max-restarts", "0",
                             "--out", str(tmp_path), *FAST], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_until(lambda: training(tmp_path), 30, "the first step", proc)
    os.kill(stage_pid(3), signal.SIGKILL)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 1
    last = err.strip().splitlines()[-1]
    assert last.startswith("dni: error: the parameter service on ") and "died" in last, last


def test_ctrl_c_stops_the_run_and_its_workers(tmp_path):
    proc = dni_run(tmp_path)
    wait_until(lambda: training(tmp_path), 30, "the first step", proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 130 and "interrupted" in err
