"""The kernel's own link and CPU shaping for the network bench: tc (HTB, netem where it exists) and CFS quotas."""
from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import time

from coordinator.bench.netlab.hosts import ip_binary

CGROUP_V1 = "/sys/fs/cgroup/cpu"
CGROUP_V2 = "/sys/fs/cgroup"
# The CFS period. A quota is spent within each period and then the group waits for the next:
# at the default 100 ms a quarter core runs 25 ms and freezes 75 ms, a host that stalls now and
# then, not a slow one. At 5 ms it runs 1.25 ms in every 5, close to a CPU at a quarter speed.
PERIOD_US = 5_000
MIN_QUOTA_US = 1_000   # the kernel's smallest quota: a share below 1/5 of a core takes a longer period


class ShapingError(RuntimeError):
    """tc or the cgroup filesystem refused."""


def tc_binary() -> str:
    return shutil.which("tc") or "/usr/sbin/tc"


def _tc(netns: str | None, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    argv = [tc_binary(), *args] if netns is None else [ip_binary() or "ip", "netns", "exec", netns, tc_binary(), *args]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if check and result.returncode:
        raise ShapingError(f"'tc {' '.join(args)}' failed: {result.stderr.strip()}")
    return result


def netem() -> tuple[bool, str]:
    """Whether this kernel has the netem qdisc; if not, what tc said (the relay stands in for it)."""
    name = f"dninetem{os.getpid()}"
    made = subprocess.run([ip_binary() or "ip", "netns", "add", name], capture_output=True, text=True)
    if made.returncode:
        return False, f"could not make a scratch namespace to try netem: {made.stderr.strip()}"
    try:
        result = _tc(name, "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms", check=False)
        return result.returncode == 0, result.stderr.strip() or "netem qdisc added"
    finally:
        subprocess.run([ip_binary() or "ip", "netns", "del", name], capture_output=True)


def rate_bits(rate: str) -> float:
    """tc's rate syntax (`100mbit`, `1gbit`, `500kbit`) in bits per second."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([kmg]?)bit", rate.strip().lower())
    if not m:
        raise ValueError(f"--bandwidth: expected a rate like 100mbit or 1gbit, got {rate!r}")
    return float(m.group(1)) * {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}[m.group(2)]


def shape(dev: str, netns: str | None, rate: str | None, delay_ms: float = 0.0) -> str:
    """Egress of `dev`: HTB at `rate` (a leaf netem for the delay, where netem exists); returns what it set.

    HTB rather than TBF so a delay can hang under it as a leaf; its burst is left to tc, which
    sizes it from the rate and the timer, as a NIC's shaper would be.
    """
    if rate is None and not delay_ms:
        return "none"
    if rate is None:
        _tc(netns, "qdisc", "add", "dev", dev, "root", "netem", "delay", f"{delay_ms}ms", "limit", "100000")
        return f"netem delay {delay_ms} ms"
    rate_bits(rate)
    _tc(netns, "qdisc", "add", "dev", dev, "root", "handle", "1:", "htb", "default", "1")
    _tc(netns, "class", "add", "dev", dev, "parent", "1:", "classid", "1:1", "htb", "rate", rate, "ceil", rate)
    if delay_ms:
        _tc(netns, "qdisc", "add", "dev", dev, "parent", "1:1", "netem", "delay", f"{delay_ms}ms", "limit", "100000")
    return f"htb {rate}" + (f" + netem delay {delay_ms} ms" if delay_ms else "")


def qdisc(dev: str, netns: str | None = None) -> str:
    return _tc(netns, "qdisc", "show", "dev", dev, check=False).stdout.strip()


class CpuQuota:
    """A cgroup whose processes share `share` of one core (CFS bandwidth control), v1 or v2."""

    def __init__(self, name: str, share: float):
        if not 0 < share <= 64:
            raise ValueError(f"--slow-share: {share} cores is not a share of a machine")
        self.period = max(PERIOD_US, math.ceil(MIN_QUOTA_US / share))
        quota = int(share * self.period)
        if os.path.isfile(f"{CGROUP_V1}/cpu.cfs_quota_us"):
            self.path, self.kind = f"{CGROUP_V1}/{name}", "v1 cpu.cfs_quota_us"
            settings = (("cpu.cfs_period_us", self.period), ("cpu.cfs_quota_us", quota))
        elif "cpu" in _read(f"{CGROUP_V2}/cgroup.controllers").split():
            self.path, self.kind = f"{CGROUP_V2}/{name}", "v2 cpu.max"
            settings = (("cpu.max", f"{quota} {self.period}"),)
        else:
            raise ShapingError("no cgroup cpu controller (v1 cpu.cfs_quota_us or v2 cpu.max) to make a slow host with")
        os.mkdir(self.path)
        try:
            for setting in settings:
                self._write(*setting)
        except OSError:
            os.rmdir(self.path)   # a group the kernel would not set is not left behind
            raise
        self.share = share

    def _write(self, name: str, value) -> None:
        with open(f"{self.path}/{name}", "w") as f:
            f.write(f"{value}\n")

    def add(self, pid: int) -> None:
        """Move a process, every thread of it, into the group (from outside: `ip netns exec`
        remounts /sys, so the cgroup tree is not at its usual place inside a namespace)."""
        self._write("cgroup.procs", pid)

    def lift(self) -> None:
        """No quota any more: the group's processes run at full speed again (`dni bench stall`'s stall ends)."""
        self._write(*(("cpu.cfs_quota_us", -1) if self.kind.startswith("v1") else ("cpu.max", f"max {self.period}")))

    def throttled(self) -> dict:
        """How often and how long the kernel held the group back (cpu.stat)."""
        stat = dict(line.split() for line in _read(f"{self.path}/cpu.stat").splitlines() if line.strip())
        # cgroup v1 counts ns (throttled_time), v2 µs (throttled_usec)
        ms = int(stat["throttled_time"]) / 1e6 if "throttled_time" in stat else int(stat.get("throttled_usec", 0)) / 1e3
        return {"periods": int(stat.get("nr_periods", 0)), "throttled_periods": int(stat.get("nr_throttled", 0)),
                "throttled_ms": ms}

    def remove(self) -> None:
        """Remove the group once its processes are gone (the bench kills them first)."""
        for _ in range(100):
            try:
                os.rmdir(self.path)
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.05)   # a killed process leaves the group a moment after it dies
        raise ShapingError(f"cgroup {self.path} still has processes: {_read(self.path + '/cgroup.procs').split()}")


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""
