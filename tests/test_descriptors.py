"""Descriptors: strangers' idle connections to a CURVE coordinator cannot use up the ones its checkpoints need."""
import json
import resource
import socket
import subprocess
import sys

import pytest
from timing import FAST, training, wait_until

from protocol import descriptors
from protocol.keys import generate

LIMIT = 256            # the coordinator's hard limit on open files: far below the connections it is offered
STRANGERS = LIMIT + 44  # TCP connections that never send a byte
EPOCHS = 60            # of the generated task, ~0.15 s each: time for checkpoints while they are connected
RUN_TIMEOUT_S = 120


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dni(*argv: str, limit: int | None = None) -> subprocess.Popen:
    at_most = (lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))) if limit else None
    return subprocess.Popen([sys.executable, "-P", "-m", "coordinator", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=at_most)


def test_raise_limit_lifts_the_soft_limit_to_the_hard_one():
    code = ("import resource; from protocol import descriptors; "
            "print(descriptors.raise_limit(), resource.getrlimit(resource.RLIMIT_NOFILE)[1])")
    soft = lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (64, LIMIT))  # noqa: E731
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, preexec_fn=soft, check=True)
    assert out.stdout.split() == [str(LIMIT), str(LIMIT)]


def test_hang_up_ends_the_connection_but_leaves_its_descriptor_open():
    ours, theirs = socket.socketpair()
    with ours, theirs:
        descriptors.hang_up(ours.fileno())
        assert theirs.recv(1) == b""      # the peer sees the end of the stream
        assert ours.fileno() >= 0         # and the descriptor is still its owner's to close


@pytest.mark.slow
def test_idle_connections_beyond_the_limit_leave_the_curve_run_its_checkpoints(tmp_path):
    keys, run, port = generate(tmp_path / "keys", workers=2), tmp_path / "run", free_port()
    endpoint = f"tcp://127.0.0.1:{port}"
    coord = dni("coordinator", "--bind", endpoint, "--keys", str(keys), "--workers", "2", "--out", str(run),
                "--hidden", "16", "--epochs", str(EPOCHS), "--checkpoint-every", "20", *FAST, limit=LIMIT)
    workers = [dni("worker", "--coordinator", endpoint, "--key", str(keys / f"worker-{i}.key_secret"),
                   "--server-key", str(keys / "coordinator.key")) for i in range(2)]
    strangers = []
    try:
        wait_until(lambda: training(run), 60, "training", coord)
        strangers = [socket.create_connection(("127.0.0.1", port)) for _ in range(STRANGERS)]
        checkpoint = (run / "model.npz").stat().st_mtime_ns if (run / "model.npz").exists() else 0
        # A checkpoint written while they are all connected: the one the flood used to make fail.
        wait_until(lambda: (run / "model.npz").exists() and (run / "model.npz").stat().st_mtime_ns > checkpoint,
                   60, "checkpoint during the flood", coord)
        assert coord.wait(RUN_TIMEOUT_S) == 0, coord.communicate()
    finally:
        for s in strangers:
            s.close()
        for p in (coord, *workers):
            if p.poll() is None:
                p.kill()
            p.communicate(timeout=RUN_TIMEOUT_S)
    assert json.loads((run / "summary.json").read_text())["epochs"] == EPOCHS


def test_an_open_without_a_free_descriptor_waits_for_one(tmp_path):
    # The limit is reached; a thread frees a descriptor a moment later, as ZeroMQ does once the Gate hangs up.
    code = f"""import os, resource, threading
from protocol import descriptors
taken = os.open(os.devnull, os.O_RDONLY)
resource.setrlimit(resource.RLIMIT_NOFILE, (taken + 1, {LIMIT}))
threading.Timer(descriptors.WAIT_S / 10, os.close, [taken]).start()
print(os.fstat(descriptors.opened(os.open, {str(tmp_path / "f")!r}, os.O_WRONLY | os.O_CREAT)).st_size)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert (out.returncode, out.stdout) == (0, "0\n"), out.stderr
