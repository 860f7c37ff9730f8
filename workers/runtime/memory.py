"""A process's memory as /proc/PID/status counts it: resident now, and its peak."""
from __future__ import annotations


def status_mb(field: str, pid: int | str = "self") -> float | None:
    """A `kB` field of /proc/PID/status (VmRSS, VmHWM, ...) in MB; None once the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def peak_rss_mb() -> float | None:
    """This process's VmHWM in MB. Not getrusage's ru_maxrss: Linux carries that across fork and exec,
    so a worker started by a coordinator holding a dataset would report the coordinator's."""
    return status_mb("VmHWM")
