"""Tests for coordinator/bench/netlab/hosts.py: namespaces talk over the bridge and vanish afterwards."""

import os
import subprocess
import sys

import pytest

from coordinator.bench.netlab import hosts as netns
from coordinator.bench.netlab.hosts import NetnsError, available, hosts, ip_binary

# Skip only when not root; as root, failing to make namespaces must fail the test.
pytestmark = [pytest.mark.slow, pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")]

PULL = """
import sys, zmq
ctx = zmq.Context()
s = ctx.socket(zmq.PULL)
s.linger = 0
s.bind(f"tcp://{sys.argv[1]}:5555")
print("bound", flush=True)
if s.poll(10000):
    print(s.recv().decode(), flush=True)
s.close()
ctx.term()
"""

PUSH = """
import sys, zmq
ctx = zmq.Context()
s = ctx.socket(zmq.PUSH)
s.linger = 10000
s.connect(f"tcp://{sys.argv[1]}:5555")
s.send(sys.argv[2].encode())
s.close()
ctx.term()
"""


def namespaces():
    return subprocess.run([ip_binary(), "netns", "list"], capture_output=True, text=True, check=True).stdout


def links():
    return subprocess.run([ip_binary(), "-o", "link", "show"], capture_output=True, text=True, check=True).stdout


def test_available_as_root():
    assert available() == (True, "")


def test_zmq_push_pull_between_namespaces():
    with hosts(2, prefix="dnitest") as (a, b):
        assert a.ip != b.ip and a.ip.startswith("10.77.") and b.ip.rsplit(".", 1)[0] == a.ip.rsplit(".", 1)[0]
        names = [a.name, b.name]
        assert all(name in namespaces() for name in names)
        bridge = f"dnb{a.ip.split('.')[2]}"
        assert bridge in links()

        # Each namespace has loopback up and only its own bridge address.
        assert "10.77." not in a.run([ip_binary(), "-o", "addr", "show", "lo"]).stdout
        assert f"inet {a.ip}/24" in a.run([ip_binary(), "-o", "addr", "show"]).stdout

        pull = b.popen([sys.executable, "-c", PULL, b.ip], stdout=subprocess.PIPE, text=True)
        assert pull.stdout.readline().strip() == "bound"
        a.run([sys.executable, "-c", PUSH, b.ip, "across the bridge"], timeout=20)
        out, _ = pull.communicate(timeout=15)
        assert out.strip() == "across the bridge"

    listed = namespaces()
    assert all(name not in listed for name in names)
    assert bridge not in links()


def test_cleanup_kills_leftovers_even_when_body_raises():
    with pytest.raises(KeyError):
        with hosts(1, prefix="dnitest") as (a,):
            sleeper = a.popen(["sleep", "600"])
            name = a.name
            raise KeyError("body failed")
    assert sleeper.poll() is not None
    assert name not in namespaces()


def test_bad_count_is_rejected():
    with pytest.raises(ValueError, match="n=0"):
        hosts(0)


def test_failure_is_an_error_not_a_skip(monkeypatch):
    monkeypatch.setattr(netns, "available", lambda: (False, "simulated"))
    with pytest.raises(NetnsError, match="simulated"):
        with hosts(1):
            pass


def test_failed_setup_removes_what_it_made(monkeypatch):
    claimed = []
    claim = netns.Network._claim_bridge
    monkeypatch.setattr(netns.Network, "_claim_bridge", lambda self: claimed.append(claim(self)) or claimed[-1])
    with pytest.raises(NetnsError, match="bad/name"):
        with hosts(2, prefix="bad/name"):
            pass
    assert claimed and f"dnb{claimed[0]}:" not in links()
