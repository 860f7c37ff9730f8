"""`dni top`'s live view on rich: the snapshot redrawn every second until q, Ctrl-C or the end of the run."""
from __future__ import annotations

import os
import select
import sys
import termios
import tty
from contextlib import contextmanager
from pathlib import Path

from coordinator.top import snapshot, view

REFRESH_S = 1.0
HINT = "dni top: the live view needs rich: pip install 'dni-synthgrad[top]' (dni top --once RUN_DIR needs nothing)"


def renderable(snap: snapshot.Snapshot):
    """The view as rich draws it: the job line, the table of stages (the bottleneck's row in red), the ending."""
    from rich import box
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for name in view.COLUMNS:
        table.add_column(name, justify="left" if name in view.LEFT else "right", no_wrap=True)
    for row in view.rows(snap):
        table.add_row(*map(Text, row), style="bold red" if row[-1] else None)   # Text: no markup from the run
    head, figures = view.job_lines(snap)
    end = view.ending_line(snap)
    return Group(Text(head, style="bold"), Text(figures), table,
                 Text(end, style="bold") if end else Text("q or Ctrl-C to quit", style="dim"))


@contextmanager
def keys(fd: int):
    """The terminal on fd in cbreak mode for the with-block (a key comes at once, unechoed); nothing if no tty."""
    if not os.isatty(fd):
        yield
        return
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def quit_pressed(fd: int, timeout: float) -> bool:
    """Wait up to timeout for a key on fd: whether it was q."""
    ready, _, _ = select.select([fd] if os.isatty(fd) else [], [], [], timeout)
    return bool(ready) and os.read(fd, 1) in (b"q", b"Q")


def watch(run_dir: Path) -> int:
    """Follow the run until it ends (then say how) or the user quits."""
    try:
        from rich.live import Live
    except ImportError:
        print(HINT, file=sys.stderr)
        return 1
    snap = snapshot.read(run_dir)   # no run, no permission: one line, before the screen changes
    fd = sys.stdin.fileno()
    try:
        with keys(fd), Live(renderable(snap), auto_refresh=False) as live:
            while snap.ending is None:
                if quit_pressed(fd, REFRESH_S):
                    return 0
                snap = snapshot.read(run_dir)
                live.update(renderable(snap), refresh=True)
    except KeyboardInterrupt:
        return 0
    return 0
