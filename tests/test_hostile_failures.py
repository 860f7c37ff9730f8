"""Failures mid-run end promptly and say where: a stall, a stage not built, an unwritable run dir, a lost process."""
import os
import signal
import stat
import threading
import time

import numpy as np
import pytest
import zmq
from hostile_job import JOB, Job, one_line_error
from timing import HEARTBEAT, SCHEDULING_MARGIN_S

from coordinator import launch, plans
from coordinator.bench import procfs
from coordinator.config import Config
from coordinator.control import Hub, Membership, Pipeline, WorkerLost
from coordinator.control.pipeline import Stalled
from protocol import Kind, Message
from protocol.liveness import (
    ABORT_REAP_TIMEOUT_S,
    FAIL_LINGER_S,
    MISSED_HEARTBEATS,
    POLL_FRACTION,
    SWEEP_FRACTION,
)
from protocol.sockets import recv, send


def test_a_stalled_pipeline_stops_with_the_stage_where_the_batch_stopped(tmp_path):
    """A worker that heartbeats but takes nothing in: the coordinator stops within the stall timeout."""
    ctx = zmq.Context()
    heartbeat, stall = 0.2, 1.0
    hub = Hub(ctx, f"ipc://{tmp_path}/control", heartbeat)
    members = Membership(hub, 1)
    pipe = Pipeline(hub, members, 2, path=[1], stall=stall)
    inbox = ctx.socket(zmq.PULL)
    inbox.bind(f"ipc://{tmp_path}/inbox")
    done = threading.Event()

    def alive_but_idle():
        sock = ctx.socket(zmq.DEALER)
        sock.connect(hub.endpoint)
        send(sock, Message(Kind.HELLO, "idle", -1, {"endpoint": f"ipc://{tmp_path}/inbox", "stage": 1,
                                                    "host": "here", "pid": 1, "key": ""}))
        while not done.is_set():
            if sock.poll(50) and recv(sock)[1].kind is Kind.ASSIGN:
                send(sock, Message(Kind.READY, "stage-1"))
            send(sock, Message(Kind.HEARTBEAT, "stage-1", -1, {"seen": {}}))
        sock.close(linger=0)

    thread = threading.Thread(target=alive_but_idle)
    thread.start()
    try:
        members.register(10)
        members.assign(["layer"], {}, {1: {"prev": None, "next": None}})
        pipe.send_batch(Kind.FORWARD, 0, np.zeros((4, 3), np.float32), np.zeros(4, np.int64))
        t0 = time.monotonic()
        with pytest.raises(Stalled) as info:
            pipe.sync()
        # The stall timeout, noticed at the coordinator's next poll.
        assert time.monotonic() - t0 < stall + POLL_FRACTION * heartbeat + SCHEDULING_MARGIN_S
    finally:
        done.set()
        thread.join()
        pipe.close()
        hub.close()
        inbox.close(linger=0)
        ctx.term()
    assert "no progress for 1 s" in str(info.value) and "stage 1 on here" in str(info.value), info.value


def test_a_worker_that_cannot_build_its_stage_says_why_and_exits_at_once(tmp_path):
    cfg = Config(hidden="16", epochs=1, heartbeat=0.5).validate()
    plan = plans.for_config(cfg)
    ctx = zmq.Context()
    hub = Hub(ctx, f"ipc://{tmp_path}/control", cfg.heartbeat)
    members = Membership(hub, plan.n_workers)
    procs = members.procs = launch.spawn(hub.endpoint, plan.n_workers)
    try:
        members.register(30)
        t0 = time.monotonic()
        with pytest.raises(WorkerLost) as info:
            members.assign(plan.roles(), {**plan.wire.to_meta(), "seed": -1}, plan.links())
    finally:
        members.stop(timeout=3)
        hub.close()
        launch.reap(procs.values())
        ctx.term()
    assert "cannot build its" in str(info.value) and "Host unreachable" not in str(info.value), info.value
    # Its last word comes at once; at the latest it exits FAIL_LINGER_S later.
    assert time.monotonic() - t0 < FAIL_LINGER_S + SCHEDULING_MARGIN_S


def test_a_run_directory_that_cannot_be_written_mid_run_is_a_one_line_error(tmp_path):
    job = Job(tmp_path, *JOB, "--epochs", "30", "--checkpoint-every", "50").training()
    # As root, a read-only mode would not stop the writes: a directory where the checkpoint's
    # file must go fails the same way (an OSError at the next checkpoint).
    for name in ("model.npz.tmp", "config.json.tmp", "summary.json.tmp"):
        while not (job.out / name).is_dir():
            try:
                (job.out / name).mkdir()
            except FileExistsError:   # a checkpoint is writing it right now: it is renamed away at once
                time.sleep(0.01)
        os.chmod(job.out / name, stat.S_IRUSR | stat.S_IXUSR)
    code, err = job.finish()
    assert code == 1
    one_line_error(err, str(job.out))


def test_a_killed_coordinator_leaves_no_socket_files(tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    job = Job(tmp_path, *JOB, "--epochs", "30", env={"TMPDIR": str(tmp)}).training()
    workers = list(job.workers.values())
    job.proc.kill()
    job.finish()
    # They miss three heartbeats, notice it at their next poll (one interval), then linger to say so.
    deadline = time.monotonic() + (MISSED_HEARTBEATS + 1) * HEARTBEAT + FAIL_LINGER_S + SCHEDULING_MARGIN_S
    while any(procfs.state(pid) not in (None, "Z") for pid in workers):
        assert time.monotonic() < deadline, "workers outlived their coordinator"
        time.sleep(0.1)
    assert list(tmp.iterdir()) == []


def test_a_stopped_worker_is_named_and_the_run_exits_promptly(tmp_path):
    # No restarts: what is timed is the shutdown (with them, the worker is killed and replaced).
    job = Job(tmp_path, *JOB, "--epochs", "30", "--max-restarts", "0").training()
    os.kill(job.workers[2], signal.SIGSTOP)
    t0 = time.monotonic()
    code, err = job.finish(timeout=30)
    # Declared lost after three silent intervals; the teardown then gives every worker ABORT_REAP_TIMEOUT_S
    # at once before it terminates the stopped one (b663baa waited for it at each step: 10 s and more).
    prompt = (MISSED_HEARTBEATS + SWEEP_FRACTION) * HEARTBEAT + ABORT_REAP_TIMEOUT_S + SCHEDULING_MARGIN_S
    assert code == 1 and time.monotonic() - t0 < prompt, (code, time.monotonic() - t0)
    one_line_error(err, "stage 2")
