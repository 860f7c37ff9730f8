"""The run directory: one run at a time, regular files only, nothing outside it."""
from __future__ import annotations

import errno
import fcntl
import os
import socket
import stat
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

from coordinator.config import ConfigError
from protocol import descriptors

MODEL_FILE = "model.npz"
PREVIOUS_FILE = "model.prev.npz"
STATUS_FILE = "status.json"   # rewritten while the run goes on (coordinator/status.py), read by `dni top`
# What a run leaves in its directory: any of them there means the directory holds a run.
RUN_FILES = ("metrics.jsonl", "summary.json", MODEL_FILE, "config.json")
# Every file a run reads or writes there, under its own name and its .tmp one (written, then renamed).
WRITTEN = tuple(name + tmp for name in (*RUN_FILES, PREVIOUS_FILE, STATUS_FILE) for tmp in ("", ".tmp"))
# Held (flock) by the process that runs in the directory; it holds that process's pid, for the error of the next.
LOCK_FILE = "run.lock"
_KINDS = ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
          (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device"))
_held: set[tuple[int, int]] = set()   # (device, inode) of the run directories this process holds


class RunDirError(ConfigError):
    """The run directory is another process's, or holds a link or a special file where a run file goes."""


def kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def refuse(path: Path, what: str) -> RunDirError:
    return RunDirError(f"{path} is {what}: a run reads and writes only regular files of its own directory, "
                       "never through a link; move it away")


@contextmanager
def claimed(path: Path, directories: tuple[str, ...] = ()) -> Iterator[Path]:
    """Hold the run directory (which exists) for the with-block, or refuse it: another process holds it, or
    one of the run's files (or `directories`) is a link or not what it should be. A claim inside one this
    process holds is that one: --resume claims before it reads the checkpoint, the run again as it starts."""
    here = os.stat(path)
    key = (here.st_dev, here.st_ino)
    if key in _held:
        check(path, directories)
        yield path
        return
    # The kernel releases a flock when its holder exits, SIGKILL included: a stale lock file blocks no one.
    lock = open_fd(path / LOCK_FILE, os.O_RDWR | os.O_CREAT)
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(lock, 200, 0).decode(errors="replace").strip() or "its pid not written yet"
            raise RunDirError(f"{path} is in use by another run ({holder}): one run at a time in a run directory; "
                              "wait for it to end, or stop it") from None
        os.ftruncate(lock, 0)
        os.pwrite(lock, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        check(path, directories)
        _held.add(key)
        try:
            yield path
        finally:
            _held.discard(key)
    finally:
        os.close(lock)


def check(path: Path, directories: tuple[str, ...] = ()) -> None:
    """Refuse the directory if a run file is a link or not a regular file (a FIFO would block its reader
    for ever), or one of `directories` is a link or no directory."""
    for names, wanted in ((WRITTEN, stat.S_ISREG), (directories, stat.S_ISDIR)):
        for name in names:
            try:
                mode = os.lstat(path / name).st_mode
            except FileNotFoundError:
                continue
            if stat.S_ISLNK(mode) or not wanted(mode):
                raise refuse(path / name, kind(mode))


def open_fd(path: Path, flags: int) -> int:
    """os.open of a regular file, never through a symbolic link, never blocking on a FIFO; to write, only
    a file of no other name (a hard link's other name may be outside the directory)."""
    try:
        fd = descriptors.opened(os.open, path, flags | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise refuse(path, kind(stat.S_IFLNK)) from None
        raise
    found = os.fstat(fd)
    writing = flags & (os.O_WRONLY | os.O_RDWR)
    if not stat.S_ISREG(found.st_mode) or (writing and found.st_nlink > 1):
        os.close(fd)
        raise refuse(path, kind(found.st_mode) if not stat.S_ISREG(found.st_mode) else "a hard link")
    os.set_blocking(fd, True)   # as open() would leave it (a Slurm worker's log becomes its stdout)
    return fd


def open_file(path: Path, mode: str = "r") -> IO:
    """open() of a run file ("r", "w", "a", and "b" for bytes), refusing what open_fd refuses. "w" writes a
    new file: never into one whose other name (a hard link) may be outside the directory."""
    if mode.startswith("w"):
        path.unlink(missing_ok=True)
    flags = {"r": os.O_RDONLY, "w": os.O_WRONLY | os.O_CREAT | os.O_EXCL, "a": os.O_WRONLY | os.O_CREAT | os.O_APPEND}
    return os.fdopen(open_fd(path, flags[mode.replace("b", "")]), mode)
