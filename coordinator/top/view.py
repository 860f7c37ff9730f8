"""What `dni top` shows of a snapshot: the job line, a row per stage with the bottleneck marked, as plain text."""
from __future__ import annotations

from coordinator.top.snapshot import Snapshot

COLUMNS = ("stage", "host", "pid", "state", "upd/s", "p50 ms", "p99 ms", "cosine", "stale", "dropped", "CPU %",
           "busy %", "")
LEFT = {"stage", "host", "state", ""}   # the rest are figures, aligned right
MARK = "<- bottleneck"
HOST_CHARS = 30   # of a host name: its row stays on a line


def printable(text: str) -> str:
    """Text from the run (a worker's host name, an error it sent) with no control character to upset a terminal."""
    return "".join(c if c.isprintable() else "?" for c in text)


def duration(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def figure(value, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def job_lines(snap: Snapshot) -> list[str]:
    st, job = snap.status, snap.status["job"]
    state = "ended" if snap.ending else st["state"]
    head = printable(f"dni top  {snap.run_dir}   {job['mode']} {job['model']}, {job['stages']} workers   {state}   "
                     f"(coordinator pid {st['pid']} on {st['host']}, up {duration(st['updated'] - st['started'])})")
    epoch = min(job["epoch"] + (state != "ended"), job["epochs"])
    parts = [f"step {job['step']}/{job['total_steps']}", f"epoch {epoch}/{job['epochs']}",
             f"{figure(job['samples_per_second'], ',.0f')} samples/s", f"loss {figure(job['loss'], '.4f')}"]
    if job["accuracy"] is not None:
        parts.append(f"{job['accuracy'][0]} accuracy {job['accuracy'][1]:.4f}")
    if job["eta_s"] is not None and state == "training":
        parts.append(f"ETA {duration(job['eta_s'])}")
    parts.append(f"restarts {job['restarts']}")
    age = snap.checkpoint_age
    parts.append("no checkpoint yet" if age is None else f"checkpoint {duration(age)} ago")
    return [head, "  ".join(parts)]


def bottleneck(snap: Snapshot) -> int | None:
    """The stage that holds the others back, while the job trains: the one that spends the largest share of its
    wall time out of its poll, working or waiting for a CPU; the others wait in poll for what it sends or frees."""
    if snap.ending or snap.status["state"] != "training":
        return None
    busy = {s["stage"]: s["busy"] for s in snap.status["stages"] if s["busy"] is not None}
    return max(busy, key=busy.get) if busy else None


def rows(snap: Snapshot) -> list[list[str]]:
    marked = bottleneck(snap)
    out = []
    for s in snap.status["stages"]:
        lat = s["latency_ms"] or {}
        busy = None if s["busy"] is None else 100 * s["busy"]
        out.append([s["name"], printable(s["host"] or "-")[:HOST_CHARS], figure(s["pid"], "d"), s["state"],
                    figure(s["updates_per_second"], ".1f"), figure(lat.get("p50"), ".3f"),
                    figure(lat.get("p99"), ".3f"), figure(s["cos"], ".3f"), figure(s["staleness"], "d"),
                    str(s["dropped"]), figure(s["cpu_percent"], ".0f"), figure(busy, ".0f"),
                    MARK if s["stage"] == marked else ""])
    return out


def ending_line(snap: Snapshot) -> str | None:
    """How the run ended, or what is odd about its silence; None while all is well."""
    if snap.ending is not None:
        return printable(f"the run has ended: {snap.ending}")
    return snap.silence


def plain(snap: Snapshot) -> str:
    """The snapshot as text: `dni top --once`."""
    table = [list(COLUMNS), *rows(snap)]
    widths = [max(len(r[i]) for r in table) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.ljust(w) if name in LEFT else cell.rjust(w)
                       for name, cell, w in zip(COLUMNS, r, widths)).rstrip() for r in table]
    end = ending_line(snap)
    return "\n".join([*job_lines(snap), "", *lines, *([end] if end else [])]) + "\n"
