"""A worker as the coordinator knows it, and the errors that say one was lost."""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Callable
from urllib.parse import urlsplit

from protocol import Message
from protocol.liveness import Liveness
from protocol.roles import title

LOADS_KEPT = 6   # heartbeats: the status file's rates cover the last 5 intervals


class WorkerLost(RuntimeError):
    """A worker died or went silent; the message names its stage and host."""

    def __init__(self, message: str, stage: int | None = None):
        super().__init__(message)
        self.stage = stage


class WorkerFailed(WorkerLost):
    """A worker gave up (it says why), or reported what must stop the run."""


@dataclass
class Member:
    identity: bytes
    stage: int
    hello: dict
    liveness: Liveness
    ready: bool = False
    bye: dict | None = None
    proc: object = None          # the local Popen, when this process launched it
    role: str | None = None      # once assigned
    seen: dict = field(default_factory=dict)   # data kind -> the last id it took, from its heartbeats
    rejoining: bool = False      # told to reset: what it sends until its new hello is stale
    # (time.monotonic(), load) of its last heartbeats (protocol/liveness.py LOAD): rates over a few seconds
    loads: deque = field(default_factory=lambda: deque(maxlen=LOADS_KEPT))

    def drop_role(self) -> None:
        """Told to reset: its role, and its progress in it, are gone; it must rejoin."""
        self.role = None
        self.ready = False
        self.seen = {}
        self.loads.clear()   # its next role's totals start again
        self.rejoining = True

    def died(self) -> WorkerLost | None:
        """A local worker whose process has ended, lost with its exit code (None while it runs, or if remote)."""
        if self.proc is not None and self.proc.poll() is not None:
            return WorkerLost(f"{self.describe()} died with exit code {self.proc.returncode}", self.stage)
        return None

    def describe(self) -> str:
        # Hostnames repeat (containers, namespaces); the address the worker advertised does not.
        endpoint = str(self.hello.get("endpoint", ""))
        address = f"{urlsplit(endpoint).hostname}, " if endpoint.startswith("tcp://") else ""
        host, pid = self.hello.get("host", "?"), self.hello.get("pid", "?")
        return f"{title(self.role, self.stage)} on {host} ({address}pid {pid})"


Handler = Callable[[Member, Message], None]
