"""CURVE certificates: generate a coordinator/worker key directory and load keys from it.

Layout of a key directory (mode 0700), designed to be handed out file by file:

    coordinator.key_secret   stays on the coordinator host
    coordinator.key          public; copy to every worker host (its curve_serverkey)
    worker-N.key_secret      hand to worker N only
    workers/worker-N.key     public; the coordinator's allowlist

Keys are returned as 40-byte Z85 text, which pyzmq accepts for every CURVE option.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import struct
import tempfile
from pathlib import Path

import zmq
import zmq.auth
from zmq.utils import z85

COORDINATOR = "coordinator"
WORKERS_DIR = "workers"
_SECRET_MODE = 0o600
_DIR_MODE = 0o700
# What generate writes: the files `remove` may delete (workers/ holds the public worker-N.key files).
_GENERATED = re.compile(rf"{COORDINATOR}\.key(_secret)?|worker-\d+\.key_secret")
_GENERATED_PUBLIC = re.compile(r"worker-\d+\.key")


class KeyFileError(ValueError):
    """A key file or key directory is missing, corrupt, unsafe or would be overwritten."""


def generate(directory: str | Path, workers: int = 1) -> Path:
    """Write a coordinator keypair and `workers` worker keypairs (numbered from 0); return the directory.

    A directory made here is mode 0700; one that exists keeps its mode (it may be shared, or the
    working directory): the keys are made in a private directory inside it, and moved out of it
    once every secret is mode 0600."""
    if workers < 1:
        raise KeyFileError(f"generate: workers={workers} must be >= 1")
    if not str(directory):
        raise KeyFileError("generate: the directory name is empty; give a directory for the keys")
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise KeyFileError(f"{directory} exists and is not a directory; give a directory for the keys")
    names = [f"{COORDINATOR}.key", f"{COORDINATOR}.key_secret", WORKERS_DIR]
    names += [f"worker-{i}.key_secret" for i in range(workers)]
    existing = [directory / name for name in names if os.path.lexists(directory / name)]
    if existing:
        raise KeyFileError(f"{existing[0]} already exists; refusing to overwrite keys")
    try:
        directory.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".keys-", dir=directory))   # mode 0700
        try:
            _write(staging, workers)
            for name in names:   # a rename: each file arrives whole and with its mode
                os.replace(staging / name, directory / name)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    except OSError as e:
        raise KeyFileError(f"{directory}: cannot write keys there ({e.strerror or e})") from None
    return directory


def _write(directory: Path, workers: int) -> None:
    (directory / WORKERS_DIR).mkdir(mode=_DIR_MODE)
    _, secret = zmq.auth.create_certificates(directory, COORDINATOR)
    os.chmod(secret, _SECRET_MODE)
    for i in range(workers):
        public, secret = zmq.auth.create_certificates(directory, f"worker-{i}")
        os.chmod(secret, _SECRET_MODE)
        # The worker's public key only matters to the coordinator: file it in the allowlist.
        os.replace(public, directory / WORKERS_DIR / Path(public).name)


def remove(directory: str | Path) -> None:
    """Delete a key directory that generate wrote, if there is one; refuse one that holds anything else."""
    directory = Path(directory)
    if not os.path.lexists(directory):
        return
    files = _own_files(directory, _GENERATED, WORKERS_DIR)
    files += _own_files(directory / WORKERS_DIR, _GENERATED_PUBLIC) if (directory / WORKERS_DIR).is_dir() else []
    for path in files:
        path.unlink()
    for path in (directory / WORKERS_DIR, directory):
        if path.is_dir():
            path.rmdir()


def _own_files(directory: Path, names: re.Pattern, subdirectory: str = "") -> list[Path]:
    """The files of `directory`, all of them regular files that generate writes; else a KeyFileError."""
    if directory.is_symlink() or not directory.is_dir():
        raise KeyFileError(f"{directory} is not a key directory; move it away")
    found = []
    for path in directory.iterdir():
        if path.name == subdirectory and path.is_dir() and not path.is_symlink():
            continue
        if not (names.fullmatch(path.name) and stat.S_ISREG(path.lstat().st_mode)):
            raise KeyFileError(f"{path} is not a file of `dni keys generate`: refusing to delete {directory}; "
                               "move it away")
        found.append(path)
    return found


def load_server(directory: str | Path) -> tuple[bytes, bytes]:
    """(public, secret) of the coordinator, from DIR/coordinator.key_secret."""
    return _load_keypair(Path(directory) / f"{COORDINATOR}.key_secret")


def load_client(secret_file: str | Path) -> tuple[bytes, bytes]:
    """(public, secret) of a worker, from its worker-N.key_secret file."""
    return _load_keypair(Path(secret_file))


def load_public(public_file: str | Path) -> bytes:
    """The public key in a .key file, e.g. coordinator.key for a worker's curve_serverkey."""
    public, _ = _read_certificate(Path(public_file))
    return public


def allowed_workers(directory: str | Path) -> list[bytes]:
    """Public keys of all workers the coordinator admits: every DIR/workers/*.key."""
    workers_dir = Path(directory) / WORKERS_DIR
    if not workers_dir.is_dir():
        raise KeyFileError(f"{workers_dir}: worker allowlist directory is missing")
    for path in (workers_dir, Path(directory)):   # whoever may write the key directory may replace workers/
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o022:
            raise KeyFileError(f"{path}: others may write this directory (mode {mode:04o}) and so add keys to "
                               "the allowlist; chmod go-w it")
    keys = [load_public(p) for p in sorted(workers_dir.glob("*.key"))]
    if not keys:
        raise KeyFileError(f"{workers_dir}: no worker public keys (*.key) to allow")
    return keys


def _load_keypair(path: Path) -> tuple[bytes, bytes]:
    try:
        mode = path.stat().st_mode
    except OSError as e:
        raise KeyFileError(f"{path}: cannot read secret key file ({e.strerror or e})") from None
    # Like ssh: a secret others can read is no longer a secret, so refuse to use it.
    if stat.S_IMODE(mode) & 0o077:
        raise KeyFileError(f"{path}: secret key file has mode {stat.S_IMODE(mode):04o}; chmod 600 it")
    public, secret = _read_certificate(path)
    if secret is None:
        raise KeyFileError(f"{path}: no secret key in file (is this the public .key file?)")
    if zmq.curve_public(secret) != public:
        raise KeyFileError(f"{path}: secret key does not match the public key in the same file")
    return public, secret


def _read_certificate(path: Path) -> tuple[bytes, bytes | None]:
    try:
        regular = stat.S_ISREG(path.stat().st_mode)
    except OSError as e:
        raise KeyFileError(f"{path}: cannot read key file ({e.strerror or 'not found'})") from None
    if not regular:   # a FIFO would block its reader for ever
        raise KeyFileError(f"{path}: not a regular file, so not a key file")
    try:
        public, secret = zmq.auth.load_certificate(path)
    except OSError as e:
        raise KeyFileError(f"{path}: cannot read key file ({e.strerror or 'not found'})") from None
    except (ValueError, UnicodeDecodeError):
        raise KeyFileError(f"{path}: not a ZeroMQ certificate (no public-key line)") from None
    for label, key in (("public", public), ("secret", secret)):
        if key is not None and not _is_z85_key(key):
            # Name the field, never the value: it may be secret.
            raise KeyFileError(f"{path}: corrupt {label} key (want 40 Z85 characters)")
    return public, secret


def _is_z85_key(key: bytes) -> bool:
    if len(key) != 40:
        return False
    try:
        z85.decode(key)
    except (KeyError, struct.error):  # a character outside Z85, or a group above 2**32
        return False
    return True
