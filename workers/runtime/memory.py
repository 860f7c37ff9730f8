"""This process's peak resident memory, as the kernel counts it for its own address space."""
from __future__ import annotations


def peak_rss_mb() -> float | None:
    """VmHWM in MB (None where /proc has none). Not getrusage's ru_maxrss: Linux carries that across
    fork and exec, so a worker started by a coordinator holding a dataset would report the coordinator's."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None
