"""--mode pipedream: the 1F1B schedule, weight stashing, and runs over processes equal to the one-process simulation."""
import json
import os
import random
import signal
from collections import deque

import numpy as np
import pytest
import zmq
from resumable import records, stage_pid, start, steps_logged, summary, worker_pids
from timing import FAST, wait_until

from coordinator import checkpoint
from coordinator.cli import main
from coordinator.config import Config
from coordinator.data import batches, generated_task
from protocol import Kind, Message
from protocol.roles import LAYER
from protocol.sockets import send
from protocol.wireconfig import WireConfig
from workers.numerics.pipedream import OneFOneB, Stash, backward, forward, schedule, train_stretch
from workers.numerics.reference import build_network
from workers.roles.pipedream import PipeDreamWorker

SEED, SUBSET, BATCH = 3, 1280, 128   # 10 steps an epoch
JOB = ["--mode", "pipedream", "--optimizer", "adam", "--lr", "3e-3", "--hidden", "32,16,16",
       "--train-subset", str(SUBSET), "--seed", str(SEED), "--log-every", "1", "--checkpoint-seconds", "0"]
STAGES = 4


def test_the_schedule_is_1f1b_up_to_each_stages_limit_then_drains():
    F, B = "F", "B"
    assert schedule(3, 5) == [
        [(F, 0), (F, 1), (F, 2), (B, 0), (F, 3), (B, 1), (F, 4), (B, 2), (B, 3), (B, 4)],
        [(F, 0), (F, 1), (B, 0), (F, 2), (B, 1), (F, 3), (B, 2), (F, 4), (B, 3), (B, 4)],
        [(F, 0), (B, 0), (F, 1), (B, 1), (F, 2), (B, 2), (F, 3), (B, 3), (F, 4), (B, 4)]]
    assert schedule(3, 2)[0] == [(F, 0), (F, 1), (B, 0), (B, 1)]   # fewer batches than the limit: all, then drain


def drive(gate: OneFOneB, n: int, rng: random.Random) -> list:
    """A stage's op order when its n inputs, then a barrier, and its gradients (each after its forward,
    each stream in id order) come interleaved at random; what comes early waits, as in the worker."""
    ops, inputs, grads, deferred, waiting = [], 0, 0, deque(), deque()
    forwarded = 0
    while len(ops) < 2 * n:
        if rng.choice([kind for kind, may in (("in", inputs <= n), ("grad", grads < forwarded)) if may]) == "in":
            deferred.append(inputs)
            inputs += 1
        else:
            waiting.append(grads)
            grads += 1
        progress = True
        while progress:
            progress = False
            if deferred and gate.may_forward():   # the loop takes a deferred input once not held
                j, progress = deferred.popleft(), True
                if j == n:
                    gate.drain()
                else:
                    gate.forwarded()
                    ops.append(("F", j))
                    forwarded += 1
            if waiting and gate.may_backward():
                gate.backwarded()
                ops.append(("B", waiting.popleft()))
                progress = True
    return ops


@pytest.mark.parametrize("seed", range(10))
def test_a_stage_runs_the_schedule_whatever_order_its_messages_arrive_in(seed):
    rng, stages = random.Random(seed), 4
    for n in (2, 9):
        for k in range(1, stages):
            assert drive(OneFOneB(k, stages), n, rng) == schedule(stages, n)[k - 1], (n, k)


def test_each_backward_uses_the_weights_its_forward_used():
    cfg = WireConfig.from_meta({**Config(mode="pipedream", optimizer="sgd", lr=0.1).listed("wire"),
                                "sizes": [6, 5, 4, 3], "total_steps": 10, "cache": 24})
    stage = build_network(cfg)[1]   # stage 2: its backward sends dL/dx, made with the stashed weights
    stash = Stash(keeps_weights=True)
    rng = np.random.default_rng(1)
    x, y, g = (rng.standard_normal((8, 5), np.float32), rng.integers(0, 3, 8),
               rng.standard_normal((8, 4), np.float32))
    w0 = stage.layer.params["W"].copy()
    h0 = forward(stage, stash, 0, x, y)
    forward(stage, stash, 1, x, y)
    assert stash.peak() == {"batches": 2, "bytes": w0.nbytes + 4 * 4 + 2 * (x.nbytes + h0.nbytes)}
    _, _, version = backward(stage, stash, 0, g)
    assert version == 0 and not np.array_equal(stage.layer.params["W"], w0)   # updated at once
    dx, _, version = backward(stage, stash, 1, g)
    assert version == 0 and np.array_equal(dx, ((g * (h0 > 0)) @ w0.T))      # with the stashed w0
    assert stash.bytes == 0 and not stash.versions   # freed once the backwards are done


def stretches(steps: int, per_epoch: int, barriers=()) -> list[tuple[int, int]]:
    """(first batch, batches) between barriers: each epoch's end, and the steps in `barriers`."""
    cuts = sorted({*range(per_epoch, steps + 1, per_epoch), *barriers})
    return [(a, b - a) for a, b in zip([0, *cuts], cuts)]


def simulate(run, barriers=()) -> tuple[list, list]:
    """The run's training in one process, drained where it had barriers; (the stages, the stretches)."""
    cfg, _ = checkpoint.load(run)
    net = build_network(WireConfig.from_meta(cfg))
    data = generated_task(seed=SEED).first(SUBSET).centred()
    rng = np.random.default_rng(SEED)
    per_epoch = SUBSET // BATCH
    feed = [xy for _ in range(cfg["step"] // per_epoch) for xy in batches(data.x_train, data.y_train, BATCH, rng)]
    parts = stretches(len(feed), per_epoch, barriers)
    for first, n in parts:
        train_stretch(net, first, feed[first:first + n])
    return net, parts


def assert_equals_simulation(run, barriers=()) -> list:
    """The run's checkpoint equals the simulation's state bit for bit; returns the stretches."""
    net, parts = simulate(run, barriers)
    _, states = checkpoint.load(run)
    for stage in net:
        for name, want in stage.state().items():
            assert np.array_equal(states[stage.index][name], want), (stage.index, name)
    return parts


@pytest.mark.parametrize("credit", ["coordinator", "link"])
def test_pipedream_over_processes_equals_the_one_process_1f1b_simulation(tmp_path, credit):
    """Transparency, and the weight version each batch met at each stage is the schedule's."""
    assert main(["run", *JOB, "--epochs", "2", "--checkpoint-every", "0", "--credit", credit, "--out", str(tmp_path),
                 *FAST]) == 0
    parts = assert_equals_simulation(tmp_path)
    done = summary(tmp_path)
    assert done["mode"] == "pipedream" and done["steps"] == 20
    assert set(done["update_latency_ms"]) == {str(k) for k in range(1, STAGES + 1)}
    for k in range(1, STAGES):
        stash = done["workers"][str(k)]["stash"]
        assert stash["batches"] == STAGES - k + 1 and stash["bytes"] > 0, (k, stash)
        met = {r["step"]: r["weight_version"] for r in records(tmp_path) if r["stage"] == k}
        want = {}
        for first, n in parts:
            ops = schedule(STAGES, n)[k - 1]
            for j in range(n):
                want[first + j] = first + sum(op == "B" for op, _ in ops[:ops.index(("F", j))])
        assert met == want, k


def test_a_killed_worker_is_replaced_and_the_run_still_equals_the_simulation(tmp_path):
    """Every stage restarts from the last checkpoint (every 5 steps): the barriers stay where they were."""
    run = tmp_path / "run"
    proc = start(run, *JOB, "--epochs", "12", "--checkpoint-every", "5", "--max-restarts", "1")
    wait_until(lambda: steps_logged(run) >= 33, 60, "step 33", proc)
    os.kill(stage_pid(2), signal.SIGKILL)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert summary(run)["restarts"] == 1
    assert_equals_simulation(run, barriers=range(5, 120, 5))
    assert not worker_pids()


def test_sigterm_then_resume_equals_the_simulation_drained_where_it_stopped(tmp_path):
    run = tmp_path / "run"
    proc = start(run, *JOB, "--epochs", "12", "--checkpoint-every", "0")
    wait_until(lambda: steps_logged(run) >= 25, 60, "step 25", proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 143, err
    stopped = checkpoint.latest(run).progress["step"]
    assert 25 <= stopped < 120
    assert main(["run", "--resume", str(run), *FAST]) == 0
    assert summary(run)["resumes"] == 1 and summary(run)["steps"] == 120
    assert_equals_simulation(run, barriers=[stopped])
    assert not worker_pids()


def test_pipedream_under_rnn_says_in_one_line_it_is_feed_forward_only(capsys, tmp_path):
    assert main(["run", "--out", str(tmp_path), "--model", "rnn", "--mode", "pipedream"]) == 2
    err = capsys.readouterr().err
    assert err == "dni: error: --mode pipedream is feed-forward only: it needs --model ff, not --model rnn\n"


def test_resume_into_another_mode_is_refused_in_one_line(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["run", *JOB, "--epochs", "1", "--checkpoint-every", "0", "--out", str(run), *FAST]) == 0
    capsys.readouterr()
    assert main(["run", "--resume", str(run), "--epochs", "2", "--mode", "backprop"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--mode 'backprop': the run in" in err and "'pipedream'" in err
    assert json.loads((run / "summary.json").read_text())["epochs"] == 1
    assert main(["eval", str(run)]) == 0   # a pipedream checkpoint evaluates in one process as any other
    assert f"test accuracy {summary(run)['test_accuracy']:.4f}" in capsys.readouterr().out


def test_a_second_gradient_for_a_waiting_backward_is_dropped_not_run_twice():
    """Stage 2 of 4 in this process, fed through its real inbox: a gradient replayed while the
    first waits its turn is dropped and counted; the barrier then runs each backward once."""
    ctx = zmq.Context()
    try:
        peers = {}
        for name in ("stage-1", "stage-3", "control"):
            peers[name] = ctx.socket(zmq.ROUTER if name == "control" else zmq.PULL)
            peers[name].bind(f"inproc://{name}")
        inbox, control = ctx.socket(zmq.PULL), ctx.socket(zmq.DEALER)
        inbox.bind("inproc://stage-2")
        control.connect("inproc://control")
        cfg = {**Config(mode="pipedream").listed("wire"), "sizes": [6, 5, 4, 3, 2], "total_steps": 10, "cache": 24}
        neighbours = {side: {"name": name, "endpoint": f"inproc://{name}"}
                      for side, name in (("prev", "stage-1"), ("next", "stage-3"))}
        worker = PipeDreamWorker(ctx, control, inbox, Message(Kind.ASSIGN, "coordinator", 0, {
            "role": LAYER, "stage": 2, "config": cfg, "heartbeat": 1.0, "neighbours": neighbours}))
        feed = ctx.socket(zmq.PUSH)
        feed.connect("inproc://stage-2")
        x, y, g = np.ones((4, 5), np.float32), np.zeros(4, np.int64), np.ones((4, 4), np.float32)
        for message in (Message(Kind.FORWARD, "stage-1", 0, {}, {"x": x, "y": y}),
                        Message(Kind.FORWARD, "stage-1", 1, {}, {"x": x, "y": y}),
                        Message(Kind.GRAD, "stage-3", 0, {}, {"g": g}),    # early: 2 in flight, the limit is 3
                        Message(Kind.GRAD, "stage-3", 0, {}, {"g": g}),
                        Message(Kind.SYNC, "stage-1", 0)):
            send(feed, message)
            worker.receive(worker.inbox)
        assert sum(worker.drops.counts.values()) == 1 and worker.stage.inflight.updates == 1
        assert worker.stash.batches.keys() == {1} and worker.order.in_flight == 1
        worker.close()
    finally:
        ctx.destroy(linger=0)
