"""What `dni top` reads of a run directory, never writing there: the status file, checked, and its freshness."""
from __future__ import annotations

import json
import os
import socket
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from coordinator import rundir
from coordinator.status import STATUS_FILE, VERSION

SILENT_S = 30.0   # a status file not rewritten for this long (it is, every second) is shown as such

NUMBER, NONE = (int, float), type(None)
# The fields `dni top` shows, with the types a status file of this VERSION holds (coordinator/status.py).
TOP = {"version": int, "updated": NUMBER, "started": NUMBER, "host": str, "pid": int, "state": str,
       "ended": (str, NONE), "job": dict, "stages": list}
JOB = {"mode": str, "model": str, "stages": int, "step": int, "total_steps": int, "epoch": int, "epochs": int,
       "samples_per_second": (*NUMBER, NONE), "loss": (*NUMBER, NONE), "accuracy": (list, NONE),
       "eta_s": (*NUMBER, NONE), "restarts": int, "resumes": int}
STAGE = {"stage": int, "name": str, "host": (str, NONE), "pid": (int, NONE), "state": str,
         "updates_per_second": (*NUMBER, NONE), "latency_ms": (dict, NONE), "cos": (*NUMBER, NONE),
         "staleness": (int, NONE), "cpu_percent": (*NUMBER, NONE), "busy": (*NUMBER, NONE), "dropped": int}


@dataclass
class Snapshot:
    """A run as its status file last said, and what `dni top` tells of it besides."""
    run_dir: Path
    status: dict
    read_at: float               # time.time() when read
    checkpoint_age: float | None  # seconds since its last checkpoint was written (None: none yet)
    ending: str | None           # how the run ended, once it has (see `ended`)

    @property
    def silence(self) -> str | None:
        """What is odd about a status file not rewritten for a while (it is, every second, while the run goes on)."""
        quiet = self.read_at - self.status["updated"]
        if self.ending is None and quiet > SILENT_S:
            return f"the coordinator has not rewritten its status for {quiet:.0f} s: hung, or on a host that is down?"
        return None


def read(run_dir: Path) -> Snapshot:
    """The run's snapshot; ValueError says in one line why there is none: no run, no permission, a corrupt file."""
    try:
        if not stat.S_ISDIR(os.stat(run_dir).st_mode):
            raise ValueError(f"{run_dir} is not a directory: give a run directory (--out of dni run)")
    except FileNotFoundError:
        raise ValueError(f"{run_dir}: no such directory") from None
    except PermissionError:
        raise ValueError(f"{run_dir}: permission denied (cannot reach the run directory)") from None
    # access() answers for the user who runs dni top, so that a refusal is said as such before anything is
    # opened (root passes: it may read anything).
    if not os.access(run_dir, os.R_OK | os.X_OK):
        raise ValueError(f"{run_dir}: permission denied (cannot read the run directory)")
    path = run_dir / STATUS_FILE
    if not path.exists():
        other = next((name for name in rundir.RUN_FILES if (run_dir / name).exists()), None)
        raise ValueError(f"{run_dir} holds no run that dni top can follow: no {STATUS_FILE}" +
                         (f" (its {other} is from a run of a dni without dni top)" if other else ""))
    if not os.access(path, os.R_OK):
        raise ValueError(f"{path}: permission denied")
    try:
        with rundir.open_file(path) as f:
            status = json.loads(f.read())
    except rundir.RunDirError as exc:   # a link or a special file where the status goes: never followed
        raise ValueError(str(exc)) from None
    except OSError as exc:
        raise ValueError(f"{path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ValueError(f"{path} is corrupt: not JSON ({exc})") from None
    check(status, path)
    return Snapshot(run_dir, status, time.time(), checkpoint_age(run_dir), ended(status))


def check(status: object, path: Path) -> None:
    """ValueError naming the first field of the status file that is missing or not what this dni writes."""
    if not isinstance(status, dict):
        raise ValueError(f"{path} is corrupt: not a map")
    if status.get("version") != VERSION:
        raise ValueError(f"{path} has layout {status.get('version')!r}, this dni reads {VERSION}: "
                         "use the dni that runs the job")
    fields(status, TOP, path, "")
    fields(status["job"], JOB, path, "job.")
    for i, stage in enumerate(status["stages"]):
        if not isinstance(stage, dict):
            raise ValueError(f"{path} is corrupt: stages[{i}] is not a map")
        fields(stage, STAGE, path, f"stages[{i}].")
        latency = stage["latency_ms"]
        if latency is not None and not all(type(latency.get(p)) in NUMBER for p in ("p50", "p99")):
            raise ValueError(f"{path} is corrupt: stages[{i}].latency_ms lacks p50 and p99")
    accuracy = status["job"]["accuracy"]
    if accuracy is not None and not (len(accuracy) == 2 and type(accuracy[0]) is str and type(accuracy[1]) in NUMBER):
        raise ValueError(f"{path} is corrupt: job.accuracy is not [what, value]")


def fields(d: dict, wanted: dict, path: Path, where: str) -> None:
    for name, kinds in wanted.items():
        if name not in d:
            raise ValueError(f"{path} is corrupt: {where}{name} is missing")
        if type(d[name]) not in (kinds if isinstance(kinds, tuple) else (kinds,)):
            raise ValueError(f"{path} is corrupt: {where}{name} is {type(d[name]).__name__}")


def checkpoint_age(run_dir: Path) -> float | None:
    try:
        return time.time() - os.stat(run_dir / rundir.MODEL_FILE).st_mtime
    except OSError:
        return None


def ended(status: dict) -> str | None:
    """How the run ended: as its coordinator said, or that the coordinator is gone (seen on its own host only)."""
    if status["ended"] is not None:
        return status["ended"]
    if status["host"] == socket.gethostname() and not os.path.exists(f"/proc/{status['pid']}"):
        return f"the coordinator (pid {status['pid']}) is gone without saying how the run ended (killed?)"
    return None
