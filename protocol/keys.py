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
import stat
import struct
from pathlib import Path

import zmq
import zmq.auth
from zmq.utils import z85

COORDINATOR = "coordinator"
WORKERS_DIR = "workers"
_SECRET_MODE = 0o600
_DIR_MODE = 0o700


class KeyFileError(ValueError):
    """A key file or key directory is missing, corrupt, unsafe or would be overwritten."""


def generate(directory: str | Path, workers: int = 1) -> Path:
    """Write a coordinator keypair and `workers` worker keypairs (numbered from 0); return the directory."""
    if workers < 1:
        raise KeyFileError(f"generate: workers={workers} must be >= 1")
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise KeyFileError(f"{directory} exists and is not a directory; give a directory for the keys")
    targets = [directory / f"{COORDINATOR}.key", directory / f"{COORDINATOR}.key_secret",
               directory / WORKERS_DIR]
    targets += [directory / f"worker-{i}.key_secret" for i in range(workers)]
    existing = [p for p in targets if p.exists()]
    if existing:
        raise KeyFileError(f"{existing[0]} already exists; refusing to overwrite keys")

    # Lock the directories down before any secret is written into them, so the files
    # are never readable by others, even before their own chmod.
    directory.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
    directory.chmod(_DIR_MODE)
    (directory / WORKERS_DIR).mkdir(mode=_DIR_MODE)

    _, secret = zmq.auth.create_certificates(directory, COORDINATOR)
    os.chmod(secret, _SECRET_MODE)
    for i in range(workers):
        public, secret = zmq.auth.create_certificates(directory, f"worker-{i}")
        os.chmod(secret, _SECRET_MODE)
        # The worker's public key only matters to the coordinator: file it in the allowlist.
        os.replace(public, directory / WORKERS_DIR / Path(public).name)
    return directory


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
