"""Network namespaces as stand-in hosts on a private bridge, for multi-machine tests and benchmarks (needs root)."""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Sequence

SUBNET = "10.77"
# Bridge and veth names must fit IFNAMSIZ (15 chars): keep them short and derived from X.
_BRIDGE = "dnb{x}"
_VETH = "dnv{x}h{i}"
_INNER_IF = "eth0"
# `ip netns exec NAME` bind-mounts /etc/netns/NAME/hosts over /etc/hosts: a per-host name table.
ETC_NETNS = "/etc/netns"
_CLONE_NEWNET = 0x40000000


class NetnsError(RuntimeError):
    """Namespaces could not be created or torn down."""


def ip_binary() -> str | None:
    # /usr/sbin is often missing from PATH for non-login shells.
    return shutil.which("ip") or (
        "/usr/sbin/ip" if os.access("/usr/sbin/ip", os.X_OK) else None
    )


def available() -> tuple[bool, str]:
    """(True, "") if this process can create namespaces, else (False, why not)."""
    if os.geteuid() != 0:
        return False, "network namespaces need root"
    if ip_binary() is None:
        return False, "iproute2 'ip' command not found"
    return True, ""


def _ip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([ip_binary() or "ip", *args], capture_output=True, text=True, timeout=30)


def _ip_ok(*args: str) -> None:
    result = _ip(*args)
    if result.returncode:
        raise NetnsError(f"'ip {' '.join(args)}' failed: {result.stderr.strip()}")


@dataclass
class Host:
    """One namespace: run commands in it with popen/run; reach it from the others at `ip`."""

    name: str
    ip: str
    veth: str = ""   # the bridge-side end of its veth pair: its egress is what this host receives
    _procs: list[subprocess.Popen] = field(default_factory=list, repr=False)

    def argv(self, argv: Sequence[str]) -> list[str]:
        return [ip_binary() or "ip", "netns", "exec", self.name, *argv]

    def popen(self, argv: Sequence[str], **kw) -> subprocess.Popen:
        # `ip netns exec` execs the command, so the Popen pid is the command's own pid.
        proc = subprocess.Popen(self.argv(argv), **kw)
        self._procs.append(proc)
        return proc

    def run(self, argv: Sequence[str], **kw) -> subprocess.CompletedProcess:
        kw = {"capture_output": True, "text": True, "timeout": 60, "check": True, **kw}
        return subprocess.run(self.argv(argv), **kw)

    def add_address(self, ip: str) -> None:
        _ip_ok("-n", self.name, "addr", "add", f"{ip}/24", "dev", _INNER_IF)

    def name_table(self, names: dict[str, str]) -> None:
        """What host names resolve to for processes started here from now on (their /etc/hosts)."""
        os.makedirs(f"{ETC_NETNS}/{self.name}", exist_ok=True)
        lines = ["127.0.0.1 localhost", *(f"{ip} {name}" for name, ip in names.items())]
        with open(f"{ETC_NETNS}/{self.name}/hosts", "w") as f:
            f.write("\n".join(lines) + "\n")

    def socket(self, kind: int = socket.SOCK_STREAM) -> socket.socket:
        """A socket of this host's network stack, made by this process: a socket keeps the
        namespace it was created in, so only this thread visits the namespace, for the call."""
        libc = ctypes.CDLL(None, use_errno=True)
        with open(f"/proc/self/task/{threading.get_native_id()}/ns/net") as home, \
                open(f"/var/run/netns/{self.name}") as there:
            if libc.setns(there.fileno(), _CLONE_NEWNET):
                raise NetnsError(f"setns into {self.name}: {os.strerror(ctypes.get_errno())}")
            try:
                return socket.socket(socket.AF_INET, kind)
            finally:
                if libc.setns(home.fileno(), _CLONE_NEWNET):  # never leave this thread elsewhere
                    raise NetnsError(f"setns back from {self.name}: {os.strerror(ctypes.get_errno())}")


def hosts(n: int, prefix: str = "dni") -> Network:
    """Context manager: `with hosts(3) as (a, b, c):` gives three namespaces on one bridge.

    Addresses are 10.77.X.1..n/24 with X picked per run (from the pid, skipping subnets
    whose bridge exists), so parallel runs don't collide. The bridge has no address:
    the root namespace is not on the subnet, so only the namespaces are reachable targets.
    On exit, processes left in the namespaces are killed and everything is deleted.
    """
    return Network(n, prefix)


class Network:
    """The bridge, namespaces and veth pairs behind `hosts()`."""

    def __init__(self, n: int, prefix: str = "dni"):
        if not 1 <= n <= 253:
            raise ValueError(f"hosts: n={n} must be between 1 and 253")
        self.n, self.prefix = n, prefix
        self.bridge: str | None = None
        self.hosts: list[Host] = []
        self._veths: list[str] = []

    def __enter__(self) -> list[Host]:
        ok, why = available()
        if not ok:
            raise NetnsError(f"cannot create network namespaces: {why}")
        try:
            x = self._claim_bridge()
            for i in range(self.n):
                self._add_host(x, i)
        except BaseException:
            self._teardown()
            raise
        return list(self.hosts)

    def __exit__(self, exc_type, exc, tb) -> None:
        problems = self._teardown()
        # Never mask the body's own exception with a cleanup complaint.
        if problems and exc_type is None:
            raise NetnsError("netns cleanup failed: " + "; ".join(problems))

    def _claim_bridge(self) -> int:
        # Creating the bridge is atomic, so it doubles as the lock on subnet X.
        start = os.getpid() % 254
        for offset in range(254):
            x = (start + offset) % 254 + 1
            name = _BRIDGE.format(x=x)
            result = _ip("link", "add", name, "type", "bridge")
            if result.returncode == 0:
                self.bridge = name
                _ip_ok("link", "set", name, "up")
                return x
            if "exists" not in result.stderr:
                raise NetnsError(f"cannot create bridge {name}: {result.stderr.strip()}")
        raise NetnsError(f"all 254 subnets {SUBNET}.X.0/24 are in use by other runs")

    def _add_host(self, x: int, i: int) -> None:
        name, veth, ip = f"{self.prefix}{x}-{i}", _VETH.format(x=x, i=i), f"{SUBNET}.{x}.{i + 1}"
        _ip_ok("netns", "add", name)
        self.hosts.append(Host(name, ip, veth))
        _ip_ok("link", "add", veth, "type", "veth", "peer", "name", _INNER_IF, "netns", name)
        self._veths.append(veth)
        _ip_ok("link", "set", veth, "master", self.bridge, "up")
        _ip_ok("-n", name, "addr", "add", f"{ip}/24", "dev", _INNER_IF)
        _ip_ok("-n", name, "link", "set", _INNER_IF, "up")
        _ip_ok("-n", name, "link", "set", "lo", "up")

    def _teardown(self) -> list[str]:
        """Kill, then delete everything created; keep going past failures and report them."""
        problems = []
        for host in self.hosts:
            # Our own children first, by handle: one may still be inside `ip netns exec`
            # and not yet have joined the namespace, so the scan below would miss it.
            for proc in host._procs:
                if proc.poll() is None:
                    proc.kill()
            # Repeat: a process may fork between listing and killing.
            for _ in range(50):
                pids = _ip("netns", "pids", host.name).stdout.split()
                if not pids:
                    break
                for pid in pids:
                    try:
                        os.kill(int(pid), signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                time.sleep(0.02)
            else:
                problems.append(f"processes in {host.name} keep respawning: {' '.join(pids)}")
            for proc in host._procs:
                try:
                    proc.wait(timeout=10)  # reap, so no zombies outlive the namespace
                except subprocess.TimeoutExpired:
                    problems.append(f"pid {proc.pid} in {host.name} did not die")
            result = _ip("netns", "del", host.name)
            if result.returncode:
                problems.append(f"netns del {host.name}: {result.stderr.strip()}")
            shutil.rmtree(f"{ETC_NETNS}/{host.name}", ignore_errors=True)
        # Deleting a namespace destroys its end of the veth pair and with it our end;
        # delete explicitly anyway in case the namespace could not be removed.
        for veth in self._veths:
            result = _ip("link", "del", veth)
            # The kernel tears namespaces down asynchronously, so the veth may vanish under us
            # (before the lookup: "Cannot find device"; between lookup and delete: "No such device").
            gone = any(why in result.stderr for why in ("Cannot find device", "No such device"))
            if result.returncode and not gone:
                problems.append(f"link del {veth}: {result.stderr.strip()}")
        if self.bridge is not None:
            result = _ip("link", "del", self.bridge)
            if result.returncode:
                problems.append(f"link del {self.bridge}: {result.stderr.strip()}")
        self.hosts, self._veths, self.bridge = [], [], None
        try:
            os.rmdir(ETC_NETNS)   # only if no other run's name tables are left in it
        except OSError:
            pass
        return problems
