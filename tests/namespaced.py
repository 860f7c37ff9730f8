"""The network lab's `dni` processes: coordinator and workers in network namespaces, over tcp with CURVE."""
import os
import subprocess
import sys
from contextlib import contextmanager

import pytest
import timing
from watched import Watched

from coordinator.bench.netlab.hosts import hosts, ip_binary
from protocol.keys import load_client

FAST = [*timing.FAST, "--checkpoint-every", "0"]
PORT = 5555
# The slow tier: each test makes namespaces and runs for seconds. Skipped only when not root (a
# developer's machine); as root, as in CI, failing to make namespaces raises NetnsError and fails the test.
NETWORK_LAB = [pytest.mark.slow, pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")]


def dni(host, *argv: str) -> Watched:
    """`dni ARGV` in host's namespace, its stdout and stderr as one."""
    # `ip netns exec` keeps the environment, so DNI_TEST_TAG reaches the process (no-orphan check).
    proc = host.popen([sys.executable, "-m", "coordinator", *argv], stdout=subprocess.PIPE,
                      stderr=subprocess.STDOUT, text=True)
    return Watched(proc, proc.stdout)


@contextmanager
def network(n: int):
    """hosts(n), and afterwards a check that every namespace is gone."""
    with hosts(n, prefix="dnimh") as made:
        yield made
    listed = subprocess.run([ip_binary(), "netns", "list"], capture_output=True, text=True, check=True).stdout
    left = {line.split()[0] for line in listed.splitlines() if line.strip()} & {h.name for h in made}
    assert not left, f"namespaces left behind: {left}"


def coordinator(host, keys, workers: int, out, *options: str) -> Watched:
    return dni(host, "-v", "coordinator", "--bind", f"tcp://{host.ip}:{PORT}", "--keys", str(keys),
                   "--workers", str(workers), "--out", str(out), *FAST, *options)


def worker(host, coord_host, secret, server_key, *options: str) -> Watched:
    return dni(host, "worker", "--coordinator", f"tcp://{coord_host.ip}:{PORT}",
                   "--key", str(secret), "--server-key", str(server_key), *options)


def secrets_of(*key_dirs) -> list[str]:
    return [load_client(p)[1].decode() for d in key_dirs for p in d.glob("*.key_secret")]
