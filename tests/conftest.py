"""Shared fixtures: where the real data lives, and the no-orphan check after every test."""
import os
import signal
import time
import uuid
from pathlib import Path

import pytest

# Pinned before numpy loads, as in every worker: a reference computed here must sum in the workers' order
# (OpenBLAS splits a large GEMV across threads, which changes its last bits).
from workers.runtime import blas  # noqa: F401, I001

MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
# Every process a test starts inherits this tag, so leftovers can be found even after
# they were re-parented to init.
TAG = f"dni-test-{uuid.uuid4().hex[:8]}"
os.environ["DNI_TEST_TAG"] = TAG


def tagged_processes() -> list[int]:
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes()
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        zombie = stat.rsplit(")", 1)[1].split()[0] == "Z"
        if f"DNI_TEST_TAG={TAG}".encode() in env and not zombie:
            found.append(int(pid))
    return found


@pytest.fixture(autouse=True)
def no_orphans():
    yield
    deadline = time.monotonic() + 5
    while tagged_processes() and time.monotonic() < deadline:
        time.sleep(0.05)
    left = tagged_processes()
    assert not left, f"processes left behind: {left}"


@pytest.fixture
def mnist() -> Path:
    assert MNIST.is_dir(), f"MNIST files not found at {MNIST}"
    return MNIST


@pytest.fixture(autouse=True)
def terminal_ctrl_c():
    """Every test starts its children with Ctrl-C at a terminal's default: a suite started in the background
    (`cmd &`) inherits SIGINT ignored and would hand that on, and the tests that press Ctrl-C on a child
    (dni top, dni bench stall) would see it ignored."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
