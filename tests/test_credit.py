"""Per-link credit: stage 1's TAKEN frees a feed, the stall watchdog names a held batch, a CREDIT frees a link."""
import json
import threading

import numpy as np
import pytest
import zmq

from coordinator.bench.netlab import projection
from coordinator.cli import main
from coordinator.control import Hub, Membership, Pipeline
from coordinator.control.pipeline import Stalled
from protocol import Kind, Message
from protocol.sockets import recv, send

WINDOW = 2


def fake_workers(ctx, endpoint, tmp_path, done: threading.Event) -> None:
    """Stage 1 and the head on real sockets, alive but stuck: stage 1 takes every batch fed (TAKEN)
    and gets no target back; the head reports batches 0 and 1 and takes nothing more."""
    inbox = ctx.socket(zmq.PULL)
    inbox.bind(f"ipc://{tmp_path}/inbox-1")
    socks = {}
    for k in (1, 2):
        socks[k] = ctx.socket(zmq.DEALER)
        socks[k].connect(endpoint)
        send(socks[k], Message(Kind.HELLO, f"w{k}", -1, {"endpoint": f"ipc://{tmp_path}/inbox-{k}", "stage": k,
                                                         "host": "here", "pid": k, "key": ""}))
    names, taken = {1: "stage-1", 2: "head-2"}, -1
    while not done.is_set():
        for k, sock in socks.items():
            while sock.poll(0):
                if recv(sock)[1].kind is Kind.ASSIGN:
                    send(sock, Message(Kind.READY, names[k]))
        while inbox.poll(10):
            msg = recv(inbox)[1]
            if msg.kind is not Kind.FORWARD:
                continue   # the barrier: stuck behind the batches
            b = taken = msg.id
            send(socks[1], Message(Kind.TAKEN, names[1], b))
            if b <= 1:   # batches 0 and 1 went up and their targets were lost on the way back
                send(socks[2], Message(Kind.DONE, names[2], b, {"loss": 1.0, "correct": 0, "n": 4}))
        send(socks[1], Message(Kind.HEARTBEAT, names[1], -1, {"seen": {"forward": taken, "grad": -1}}))
        send(socks[2], Message(Kind.HEARTBEAT, names[2], -1, {"seen": {"forward": 1}}))
    for sock in (inbox, *socks.values()):
        sock.close(linger=0)


@pytest.mark.parametrize("credit", ["link", "coordinator"])
def test_feeding_waits_for_the_right_credit_and_the_watchdog_says_where_the_batch_is_held(tmp_path, credit):
    ctx = zmq.Context()
    hub = Hub(ctx, f"ipc://{tmp_path}/control", 0.2)
    members = Membership(hub, 2)
    pipe = Pipeline(hub, members, WINDOW, path=[1, 2], stall=1.0, credit=credit)
    done = threading.Event()
    thread = threading.Thread(target=fake_workers, args=(ctx, hub.endpoint, tmp_path, done))
    thread.start()
    try:
        members.register(10)
        members.assign(["layer", "head"], {}, {1: {"prev": None, "next": 2}, 2: {"prev": 1, "next": None}})
        x, y = np.zeros((4, 3), np.float32), np.zeros(4, np.int64)
        fed = 0
        with pytest.raises(Stalled) as info:
            for b in range(5):
                pipe.send_batch(Kind.FORWARD, b, x, y)
                fed += 1
            pipe.sync()
    finally:
        done.set()
        thread.join()
        pipe.close()
        hub.close()
        ctx.term()
    said = str(info.value)
    if credit == "link":
        # Stage 1 took every batch, so all 5 were fed; the head reported 0 and 1, but 2 waits in
        # stage 1 for targets of 0 and 1 that never came.
        assert fed == 5 and pipe.pending == {(Kind.FORWARD, b) for b in (2, 3, 4)} and not pipe.untaken
        assert "forward 2 stopped before stage 2 on here (pid 2), which never took it in" in said, said
        assert "stage 1 on here (pid 1) holds it for want of credit: the last target it took from stage 2 " \
               "was for batch -1" in said, said
    else:
        # The coordinator's credit is the head's DONE: 2 and 3 were fed, 4 waits for a credit.
        assert fed == 4 and "waiting for a credit for forward batch 4" in said and "want of credit" not in said


def test_the_projection_bounds_link_credit_by_its_slowest_link_not_by_the_whole_round():
    # every CPU of a stage is on a batch's path, its helper threads' (encryption) too: 1.5 ms
    stage = {"compute": 0.6, "synth": 0.2, "send": 0.1, "receive": 0.1, "loop": 0.0, "threads": 0.5, "total": 1.5}
    stages, coordinator, link = [stage] * 3, 0.5, 10.0
    whole = projection.project(stages, coordinator, link, "dni", 2, 128, credit="coordinator")
    per_link = projection.project(stages, coordinator, link, "dni", 2, 128, credit="link")
    assert whole["period_ms"]["credit window"] == pytest.approx((4 * 10.0 + 3 * 1.5 + 0.5) / 2)
    assert per_link["period_ms"]["credit window"] == pytest.approx((2 * 10.0 + 1.5 + 1.5) / 2)
    assert per_link["samples_per_second"] == pytest.approx(128e3 / 11.5)
    # a slow coordinator is one end of the first link only
    slow = projection.project(stages, 5.0, link, "dni", 2, 128, credit="link")
    assert slow["period_ms"]["credit window"] == pytest.approx((2 * 10.0 + 5.0 + 1.5) / 2)


def stage1_staleness(out) -> list[int]:
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r["staleness"] for r in records if r["stage"] == 1 and "staleness" in r]


def test_with_credit_taken_a_link_frees_when_the_next_stage_takes_a_batch_not_when_its_target_comes(tmp_path):
    # BP(1) at 4 stages, a window of 1 per link: stage 1's target for a batch comes after the head's.
    runs = {}
    for credit in ("link", "taken"):
        out = tmp_path / credit
        assert main(["run", "--mode", "dni", "--credit", credit, "--window", "1", "--hidden", "32,32,32",
                     "--train-subset", "2048", "--epochs", "1", "--no-progress", "--out", str(out)]) == 0
        summary = json.loads((out / "summary.json").read_text())
        # every stage made every update and dropped nothing: no credit or target came for a batch not in flight
        assert all(w["updates"] == 16 and w["dropped"] == {} for w in summary["workers"].values())
        runs[credit] = stage1_staleness(out)
    assert len(runs["link"]) == len(runs["taken"]) == 16
    # link: stage 1 sends nothing on until its last batch's target came, so no target is late
    assert set(runs["link"]) == {0}
    # taken: stage 1 went on as soon as stage 2 took its batch, and targets came back updates later
    assert max(runs["taken"]) >= 1


def test_credit_taken_is_for_stages_that_learn_from_their_synthesizers(capsys, tmp_path):
    assert main(["run", "--mode", "backprop", "--credit", "taken", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--credit taken returns a link's credit before the batch's target: it needs " \
        "--mode dni or cdni" in err, err
