"""The name a worker shows in ps and top: what it serves, under which mode, in which run."""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import re
import sys

from protocol.roles import BOX, PARAMS

# A title longer than the command line would take over the environment's memory, which /proc/PID/environ
# shows (and tools read): setproctitle cuts it to the command line's length instead.
os.environ.setdefault("SPT_NOENV", "1")
try:   # the optional `proctitle` extra: the only way to rewrite the command line ps shows
    from setproctitle import setproctitle
except ImportError:
    setproctitle = None

PR_SET_NAME = 15     # prctl(2): the thread's name, /proc/PID/comm, what top shows by default
COMM_BYTES = 15      # the kernel keeps this many bytes of it
# The stage in a worker's command line: as launched (--stage K), or as titled (stage K, box K, worker K).
_STAGE = re.compile(rb"(?:--stage\0|stage |box |worker )(\d+)")


def waiting(stage: int | None) -> tuple[str, str]:
    """The titles (see `assigned`) of a worker not yet assigned: for the stage it asks for, if any."""
    if stage is None:
        return "dni worker waiting for coordinator", "dni waiting"
    return f"dni worker stage {stage} waiting for coordinator", f"dni waiting {stage}"


def assigned(role: str, stage: int, stages: int, mode: str, run: str) -> tuple[str, str]:
    """The full title (the command line, with setproctitle) and its 15-byte kernel name, once assigned:
    e.g. ("dni worker stage 2/4 cdni (run-1)", "dni stage 2/4"); the parameter service is worker boxes + 1."""
    what = "params" if role == PARAMS else f"{'box' if role == BOX else 'stage'} {stage}/{stages}"
    full = f"dni worker {what}" + (f" (worker {stage}/{stage})" if role == PARAMS else "")
    return f"{full} {mode}" + (f" ({run})" if run else ""), f"dni {what}"


def set_title(full: str, short: str) -> None:
    """Name this process: the command line if setproctitle is there (the kernel gives no other way to rewrite
    it), and always the kernel's name, which setproctitle would otherwise leave as the full title cut short."""
    if setproctitle is not None:
        setproctitle(full)
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.prctl(PR_SET_NAME, ctypes.c_char_p(short.encode()[:COMM_BYTES]), 0, 0, 0)


def stage_of(cmdline: bytes) -> int | None:
    """The stage of a local worker from its /proc/PID/cmdline, launched with --stage, titled or not."""
    found = _STAGE.search(cmdline)
    return int(found.group(1)) if found else None
