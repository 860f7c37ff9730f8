"""Open-file descriptors: the soft limit raised as far as allowed, and the share a listening socket may take."""
from __future__ import annotations

import errno
import os
import resource
import socket
import time

# Descriptors a process keeps free of its listening sockets' connections, for its own files (checkpoints
# are written to a .tmp file, then renamed; the metrics, lock and summary files; worker pipes) and its own
# connections.
RESERVE = 64
# A burst of strangers' connections can take the reserve before the Gate hangs up on those beyond its
# budget: an open of the process's own file that finds no descriptor free waits this long for one.
WAIT_S = 5.0
_TICK_S = 0.01


def raise_limit() -> int:
    """Raise this process's soft limit on open files to its hard limit, where allowed; return the soft limit.

    Many systems start processes at a soft limit of 1,024 with a far higher hard limit: a listener
    that strangers can reach needs room for their connections besides the run's own files."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):   # an unlimited hard limit some systems refuse as a soft one: keep ours
            pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def opened(opener, *args) -> int:
    """opener(*args), an os.open of one of the process's own files; if no descriptor is free, again
    until one is (the Gate hangs up on connections beyond its budget), for at most WAIT_S."""
    deadline = time.monotonic() + WAIT_S
    while True:
        try:
            return opener(*args)
        except OSError as exc:
            if exc.errno != errno.EMFILE or time.monotonic() > deadline:
                raise
            time.sleep(_TICK_S)


def in_use() -> int:
    """Descriptors this process holds open now."""
    return len(os.listdir("/dev/fd")) - 1   # less the one that listing itself opened


def connection_budget() -> int:
    """How many connections a listening socket may hold open: what the soft limit leaves beyond the
    descriptors open now and the RESERVE (at least one)."""
    return max(1, resource.getrlimit(resource.RLIMIT_NOFILE)[0] - in_use() - RESERVE)


def hang_up(fd: int) -> None:
    """Shut down the connection on this descriptor, which belongs to ZeroMQ: its I/O thread sees the end of
    the stream and closes it itself (closing it here would pull the descriptor from under ZeroMQ). No
    duplicate: it is called when descriptors have run out."""
    try:
        peer = socket.socket(fileno=fd)
    except OSError:   # closed already, or the number now names no socket
        return
    try:
        peer.shutdown(socket.SHUT_RDWR)
    except OSError:   # the peer has gone already
        pass
    finally:
        peer.detach()   # the descriptor stays ZeroMQ's to close
