"""TensorBoard event files of a run (--tensorboard): the job's curves and each stage's, from metrics.jsonl's records.

RUN_DIR/tensorboard/ holds one TensorBoard run per worker (stage-1, ..., box-1, ...) and one for the job,
so that TensorBoard draws a figure of every stage (its update latency, say) in one chart, a line each.
Each file is named by the step it starts from. A run that goes back to a checkpoint at step S (a worker
replaced, or --resume after a crash) first keeps only the events before S in the files there (a file that
starts at S or later holds none), then writes a new file from S: TensorBoard shows a step once.
"""
from __future__ import annotations

import logging
import math
import os
import struct
import time
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace

from coordinator import rundir
from coordinator.config import ConfigError
from coordinator.plotdata import number  # a finite, bounded number of a record (they come from the workers)
from protocol.roles import worker_name

log = logging.getLogger("dni")

DIR = "tensorboard"
JOB = "job"
PREFIX = "events.out.tfevents."   # TensorBoard reads the files whose name holds "tfevents"
SUFFIX = ".dni"
TMP = "rewind.tmp"                # no "tfevents" in it: TensorBoard never reads one half written
# What TensorBoard shows is at most this far behind (it reloads every 5 s itself); writes between
# flushes stay in memory, so the coordinator's loop never waits for the disk more than once per period.
FLUSH_S = 2.0
MAX_STEP = 2 ** 53
VERSION = "brain.Event:2"
HEAD = 12   # bytes before a record's event: its length (8) and the length's checksum (4); the event's follows it
INSTALL = "pip install 'dni-synthgrad[tensorboard]'"

# A record's figures and the tag each is shown under: the job's (the head's training loss, the
# coordinator's evaluations) and a stage's own. Per METRICS message (--log-every steps), their mean.
JOB_TAGS = {"loss": "loss/train", "accuracy": "accuracy/train", "val_loss": "loss/validation",
            "val_accuracy": "accuracy/validation", "test_loss": "loss/test", "test_accuracy": "accuracy/test"}
STAGE_TAGS = {"synth_loss": "synthesizer/loss", "cos": "synthesizer/cosine", "staleness": "synthesizer/staleness",
              "param_staleness": "params/staleness", "bubble": "bubble"}


def require() -> SimpleNamespace:
    """What the event files are made of: tensorboardX's Event and Summary messages, their DecodeError and its
    checksum; if tensorboardX is not installed, a one-line ConfigError saying how to install it."""
    try:
        from google.protobuf.message import DecodeError
        from tensorboardX.proto.event_pb2 import Event
        from tensorboardX.proto.summary_pb2 import Summary
        from tensorboardX.record_writer import masked_crc32c
    except ImportError:
        raise ConfigError(f"--tensorboard writes TensorBoard event files with tensorboardX, which is not installed: "
                          f"{INSTALL}") from None
    return SimpleNamespace(Event=Event, Summary=Summary, DecodeError=DecodeError, crc=masked_crc32c)


def file_name(start: int) -> str:
    return f"{PREFIX}{start:010d}{SUFFIX}"


def start_of(name: str) -> int | None:
    """The step a file of ours starts from; None for another's event file."""
    middle = name[len(PREFIX):-len(SUFFIX)] if name.startswith(PREFIX) and name.endswith(SUFFIX) else ""
    return int(middle) if middle.isdigit() else None


def percentile(values: list[float], q: float) -> float:
    """numpy's percentile (linear between the two values around the rank), without its fixed cost, which
    on a message's few values is some 100 times that of the sum."""
    ordered = sorted(values)
    at = q / 100 * (len(ordered) - 1)
    low = int(at)
    return ordered[low] + (ordered[min(low + 1, len(ordered) - 1)] - ordered[low]) * (at - low)


def figures(stage: int, records: list[dict]) -> dict[int, dict[int, dict[str, float]]]:
    """{stage (0: the job): {step: {tag: value}}} of one METRICS message's records: each figure's mean
    (the update latency: its p50 and p99) at the last step that has it."""
    good = [r for r in records if isinstance(r, dict) and type(r.get("step")) is int and 0 <= r["step"] < MAX_STEP]
    if not stage:   # the coordinator's: samples over the training clock
        good = [{**r, "samples_per_second": r["samples"] / r["train_seconds"]}
                if number(r.get("train_seconds")) and number(r.get("samples")) is not None else r for r in good]
    out: dict[int, dict[int, dict[str, float]]] = defaultdict(lambda: defaultdict(dict))

    def series(key: str) -> tuple[int, list[float]]:
        """The last step with a number under `key`, and those numbers."""
        found = [(r["step"], v) for r in good if key in r and (v := number(r[key])) is not None]
        return max((step for step, _ in found), default=-1), [v for _, v in found]

    own = STAGE_TAGS if stage else {"samples_per_second": "samples_per_second"}
    for run, tags in ((0, JOB_TAGS), (stage, own)):
        for key, tag in tags.items():
            step, values = series(key)
            if values:
                out[run][step][tag] = math.fsum(values) / len(values)
    step, values = series("latency_ms") if stage else (-1, [])
    if values:
        out[stage][step].update({"update_latency_ms/p50": percentile(values, 50),
                                 "update_latency_ms/p99": percentile(values, 99)})
    return out


class Board:
    """Writes the event files; never stops the run: a file it cannot write (a full disk) is said once,
    in a line, and the run goes on without event files, metrics.jsonl being its record."""

    def __init__(self, run_dir: Path, roles: list[str]):
        self.pb = require()
        self.dir = run_dir / DIR
        self.names = {0: JOB, **{k: worker_name(role, k) for k, role in enumerate(roles, 1)}}
        self.files: dict[str, object] = {}
        self.pending: dict[str, bytearray] = defaultdict(bytearray)
        self.start = 0
        self.last: dict[tuple[str, str], int] = {}   # (TensorBoard run, tag) -> the last step written
        self.failed = False
        self.flushed = time.monotonic()

    def rewind(self, step: int) -> None:
        """Keep the events of steps before `step` only, and write those from `step` on into new files."""
        self.close()
        if self.failed:
            return
        self.start, self.pending, self.last = step, defaultdict(bytearray), {}
        try:
            self.dir.mkdir(exist_ok=True)
            rundir.check(self.dir.parent, (DIR,))
            for run in os.scandir(self.dir):   # a TensorBoard run each: never through a link
                for name in sorted(os.listdir(run.path)) if run.is_dir(follow_symlinks=False) else ():
                    self._cut(Path(run.path, name), step)
        except (OSError, rundir.RunDirError) as exc:
            self._fail(exc, Path(getattr(exc, "filename", None) or self.dir))

    def _cut(self, path: Path, step: int) -> None:
        """An event file, less its events of `step` on (a file of ours that starts there holds nothing else)."""
        if not path.name.startswith(PREFIX):
            return
        start = start_of(path.name)
        if start is not None and start >= step:
            path.unlink()
            return
        with rundir.open_file(path, "rb") as f:
            data = f.read()
        kept = b"".join(self._before(data, step))
        if len(kept) == len(data):
            return
        tmp = path.with_name(TMP)
        with rundir.open_file(tmp, "wb") as f:
            f.write(kept)
        tmp.replace(path)

    def _before(self, data: bytes, step: int):
        """The framed records of `data` whose event is of a step before `step`, up to the first torn one."""
        at = 0
        while at + HEAD <= len(data):
            header = data[at:at + 8]
            (n,) = struct.unpack("<Q", header)
            end = at + HEAD + n + 4
            if struct.unpack_from("<I", data, at + 8)[0] != self.pb.crc(header) or end > len(data):
                return   # a crash, or a full disk, cut the file here
            try:
                event = self.pb.Event.FromString(data[at + HEAD:end - 4])
            except self.pb.DecodeError:   # a record the crash tore
                return
            if event.step < step or not event.HasField("summary"):
                yield data[at:end]
            at = end

    def write(self, stage: int, records: list[dict]) -> None:
        """One METRICS message's records (stage 0: the coordinator's evaluations)."""
        if self.failed:
            return
        for run, steps in figures(stage, records).items():
            name = self.names.get(run, f"stage-{run}")
            for step, tags in sorted(steps.items()):
                self._add(name, step, tags)
        if time.monotonic() - self.flushed >= FLUSH_S:
            self.flush()

    def _add(self, run: str, step: int, tags: dict[str, float]) -> None:
        """An event of the run's figures at a step, those of its tags not written at that step or later:
        a record of a batch before the checkpoint gone back to (late), or a figure two records share (the
        samples/s of the last validation and of the test), is in the files already."""
        fresh = [(tag, v) for tag, v in sorted(tags.items()) if step > self.last.get((run, tag), self.start - 1)]
        if fresh:
            self.last.update(((run, tag), step) for tag, _ in fresh)
            summary = self.pb.Summary(value=[self.pb.Summary.Value(tag=tag, simple_value=v) for tag, v in fresh])
            self.pending[run] += self._framed(self.pb.Event(wall_time=time.time(), step=step, summary=summary))

    def _framed(self, event) -> bytes:
        """An event as a record of the file: its length, the length's checksum, the event, the event's checksum."""
        data = event.SerializeToString()
        header = struct.pack("<Q", len(data))
        return header + struct.pack("<I", self.pb.crc(header)) + data + struct.pack("<I", self.pb.crc(data))

    def flush(self) -> None:
        """What the writes since the last flush framed, to the files (no fsync: TensorBoard reads the page cache)."""
        self.flushed = time.monotonic()
        for run, data in self.pending.items():
            path = self.dir / run / file_name(self.start)
            try:
                if run not in self.files:
                    path.parent.mkdir(exist_ok=True)
                    rundir.check(self.dir, (run,))
                    self.files[run] = rundir.open_file(path, "wb")
                    # the event every event file begins with: its format's version
                    self.files[run].write(self._framed(self.pb.Event(wall_time=time.time(), file_version=VERSION)))
                self.files[run].write(data)
                self.files[run].flush()
                data.clear()
            except (OSError, rundir.RunDirError) as exc:
                self._fail(exc, path)
                return

    def _fail(self, exc: Exception, where: Path) -> None:
        what = f"{where}: {exc.strerror}" if isinstance(exc, OSError) and exc.strerror else str(exc)
        log.warning("--tensorboard: %s; no more event files in this run, training goes on", what)
        self.failed, self.pending = True, defaultdict(bytearray)
        self.close()

    def close(self) -> None:
        if not self.failed:
            self.flush()
        for f in self.files.values():
            try:
                f.close()
            except OSError:   # its last bytes could not be written either: said already, or it is closing anyway
                pass
        self.files = {}
