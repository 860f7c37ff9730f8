"""The network lab's `dni` processes: coordinator and workers in network namespaces, over tcp with CURVE."""
import os
import subprocess
import sys
import threading
import time
from contextlib import contextmanager

import pytest
import timing

from coordinator.bench.hosts import hosts, ip_binary
from protocol.keys import load_client

FAST = [*timing.FAST, "--checkpoint-every", "0"]
PORT = 5555
# The slow tier: each test makes namespaces and runs for seconds. Skipped only when not root (a
# developer's machine); as root, as in CI, failing to make namespaces raises NetnsError and fails the test.
NETWORK_LAB = [pytest.mark.slow, pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")]


class Watched:
    """A `dni` process in a namespace; a thread collects its output lines with their arrival times."""

    def __init__(self, host, *argv: str):
        # `ip netns exec` keeps the environment, so DNI_TEST_TAG reaches the process (no-orphan check).
        self.proc = host.popen([sys.executable, "-m", "coordinator", *argv], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
        self.lines: list[tuple[float, str]] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append((time.monotonic(), line.rstrip("\n")))

    def wait(self, timeout: float = 60) -> int:
        rc = self.proc.wait(timeout)
        self.reader.join(5)
        return rc

    @property
    def text(self) -> str:
        return "\n".join(line for _, line in self.lines)

    def when(self, words: str) -> float | None:
        return next((t for t, line in self.lines if words in line), None)


@contextmanager
def network(n: int):
    """hosts(n), and afterwards a check that every namespace is gone."""
    with hosts(n, prefix="dnimh") as made:
        yield made
    listed = subprocess.run([ip_binary(), "netns", "list"], capture_output=True, text=True, check=True).stdout
    left = {line.split()[0] for line in listed.splitlines() if line.strip()} & {h.name for h in made}
    assert not left, f"namespaces left behind: {left}"


def coordinator(host, keys, workers: int, out, *options: str) -> Watched:
    return Watched(host, "-v", "coordinator", "--bind", f"tcp://{host.ip}:{PORT}", "--keys", str(keys),
                   "--workers", str(workers), "--out", str(out), *FAST, *options)


def worker(host, coord_host, secret, server_key, *options: str) -> Watched:
    return Watched(host, "worker", "--coordinator", f"tcp://{coord_host.ip}:{PORT}",
                   "--key", str(secret), "--server-key", str(server_key), *options)


def secrets_of(*key_dirs) -> list[str]:
    return [load_client(p)[1].decode() for d in key_dirs for p in d.glob("*.key_secret")]
