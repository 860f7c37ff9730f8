"""What /proc tells of a process (memory, CPU, threads, workers, listening sockets, libraries) and of the machine."""
from __future__ import annotations

import os
from pathlib import Path

from workers.runtime import memory, proctitle

ACCEPTCON = 0x10000   # /proc/net/unix's flag of a listening socket (__SO_ACCEPTCON)
TCP_LISTEN = "0A"     # /proc/net/tcp's state of a listening socket


def rss_mb(pid: int) -> float | None:
    """Resident memory in MB; None once the process is gone."""
    return memory.status_mb("VmRSS", pid)


def state(pid: int) -> str | None:
    """The process's state letter (R running, S sleeping, Z zombie, ...); None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of every thread of the process (counted in clock ticks)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def threads(pid: int) -> list[str]:
    """The thread ids of the process."""
    return os.listdir(f"/proc/{pid}/task")


def thread_name(pid: int, tid: str) -> str:
    with open(f"/proc/{pid}/task/{tid}/comm") as f:
        return f.read()


def schedstat(pid: int, tid: str) -> tuple[int, int]:
    """ns a thread has run, and has waited runnable for a core (the kernel's schedstat, to the ns)."""
    with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
        ran, waited, _ = (int(v) for v in f.read().split())
    return ran, waited


def machine_busy() -> tuple[float, int]:
    """CPU seconds the whole machine has spent busy (every process, ours and others'), and how
    many threads are runnable right now, the one reading this included."""
    with open("/proc/stat") as f:
        lines = f.read().splitlines()
    ticks = [int(v) for v in lines[0].split()[1:]]
    running = next(int(line.split()[1]) for line in lines if line.startswith("procs_running"))
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK"), running   # busy: all but idle, iowait


def workers(pid: int) -> dict[int, int]:
    """stage -> pid of the children the process started with --stage (the workers of a `dni run`)."""
    out = {}
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return out
    for child in children:
        stage = proctitle.stage_of(Path(f"/proc/{child}/cmdline").read_bytes())
        if stage is not None:
            out[stage] = int(child)
    return out


def socket_inodes(pid: int) -> set[str]:
    """The inodes of the sockets the process has open (none once it is gone)."""
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
    except OSError:
        return set()
    return inodes


def unix_listening(pid: int | None = None) -> list[str]:
    """The names (abstract @names or paths) unix sockets listen on: every process's, or only pid's."""
    mine = None if pid is None else socket_inodes(pid)
    found = []
    for line in Path("/proc/net/unix").read_text().splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 8 and int(parts[3], 16) & ACCEPTCON and (mine is None or parts[6] in mine):
            found.append(parts[7])
    return found


def tcp_listening_ports(pid: int) -> set[int]:
    """TCP ports listening in the network namespace of the process (its /proc view of the stack)."""
    with open(f"/proc/{pid}/net/tcp") as f:
        rows = [line.split() for line in f.readlines()[1:]]
    return {int(r[1].rsplit(":", 1)[1], 16) for r in rows if r[3] == TCP_LISTEN}


def mapped_libraries(name: str) -> list[str]:
    """The files mapped into this process whose file name contains `name` (any case), sorted."""
    with open("/proc/self/maps") as maps:
        return sorted({line.split()[-1] for line in maps if name in line.rsplit("/", 1)[-1].lower()})
