"""Checkpoints: the complete training state in one .npz, written atomically beside the one before; no pickle.

A checkpoint holds every stage's arrays (parameters, optimizer moments and counters), the config
`dni eval` rebuilds the model from, and the progress `--resume` and restarts continue from (see
coordinator/epochs.py), both as JSON strings. The newest is model.npz, the one before it
model.prev.npz: a reader that finds the newest incomplete falls back to the previous, and says so.
"""
from __future__ import annotations

import json
import logging
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from coordinator import checkpoint_checks as checks
from coordinator.rundir import MODEL_FILE, PREVIOUS_FILE, open_file
from protocol import descriptors

log = logging.getLogger("dni")


@dataclass
class Checkpoint:
    config: dict                                 # what built the model (config.json), with its step
    states: dict[int, dict[str, np.ndarray]]     # stage -> its full state
    progress: dict | None                        # where training stood; None in checkpoints before resuming existed
    path: Path


def write_json(path: Path, obj) -> None:
    """Write JSON to a temporary file and rename it: a reader never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    with open_file(tmp, "w") as f:
        f.write(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, path)


def save(run_dir: Path, config: dict, states: dict[int, dict[str, np.ndarray]], progress: dict) -> Path:
    arrays = {f"stage{k}/{name}": a for k, state in states.items() for name, a in state.items()}
    # The config and progress ride inside the archive as plain string arrays, so weights and
    # what they belong to can never be out of step.
    arrays["config"] = np.array(json.dumps({**config, "step": progress["step"]}))
    arrays["progress"] = np.array(json.dumps(progress))
    path, tmp = run_dir / MODEL_FILE, run_dir / (MODEL_FILE + ".tmp")
    with open_file(tmp, "wb") as f:
        np.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())   # on disk before the rename makes it the newest
    if path.exists():
        # The newest gets a second name as the previous one before it is replaced: at every
        # moment both names point at complete files (or the previous is still the older one).
        link = run_dir / (PREVIOUS_FILE + ".tmp")
        link.unlink(missing_ok=True)
        os.link(path, link)
        os.replace(link, run_dir / PREVIOUS_FILE)
    os.replace(tmp, path)
    directory = descriptors.opened(os.open, run_dir, os.O_RDONLY)
    try:
        os.fsync(directory)    # the renames themselves survive a crash
    finally:
        os.close(directory)
    write_json(run_dir / "config.json", config)
    return path


def read(path: Path) -> Checkpoint:
    """One checkpoint file, every entry checked (coordinator/checkpoint_checks.py) and read, so a torn or
    tampered file fails here, not in a worker; ValueError naming what is wrong."""
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint: {path} does not exist")
    if not path.is_file():   # np.load of a FIFO would wait for ever
        raise ValueError(f"no checkpoint: {path} is not a regular file")
    try:
        with zipfile.ZipFile(path) as zf:
            config, progress, states = checks.load(zf)
    except (ValueError, KeyError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"corrupt checkpoint {path}: {exc}") from None
    return Checkpoint(config, states, progress, path)


def latest(run_dir: Path) -> Checkpoint:
    """The newest readable checkpoint of a run directory: model.npz, else model.prev.npz (saying so)."""
    run_dir = Path(run_dir)
    try:
        return read(run_dir / MODEL_FILE)
    except (FileNotFoundError, ValueError) as exc:
        if not (run_dir / PREVIOUS_FILE).is_file():
            raise
        previous = read(run_dir / PREVIOUS_FILE)
        log.warning("%s; using the previous checkpoint %s (step %s) instead", exc, previous.path,
                    previous.config.get("step"))
        return previous


def load(run_dir: Path) -> tuple[dict, dict[int, dict[str, np.ndarray]]]:
    """(config, states) of the run's newest readable checkpoint."""
    found = latest(run_dir)
    return found.config, found.states
