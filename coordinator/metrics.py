"""Run metrics: per-step JSON lines, update-latency percentiles, the live progress line, the summary."""
from __future__ import annotations

import json
import sys
import time
from collections import defaultdict, deque
from pathlib import Path

import numpy as np

from coordinator import rundir
from coordinator.eventfiles import Board
from coordinator.quantiles import Quantiles

COSINE_STEPS = 100


def percentiles(values) -> dict:
    a = np.asarray(values, dtype=np.float64)
    if a.size == 0:
        return {"p50": None, "p99": None, "n": 0}
    return {"p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99)), "n": int(a.size)}


class MetricsLog:
    """Writes metrics.jsonl (one line per step and stage) and keeps what the summary needs."""

    def __init__(self, run_dir: Path, since: int | None = None, board: Board | None = None):
        """since: continue a resumed run's file from this step (see rewind); None: a new file.
        board: the run's TensorBoard event files (--tensorboard), fed the same records."""
        self.path = run_dir / "metrics.jsonl"
        self.file = None
        self.board = board
        if since is None:
            rundir.open_file(self.path, "w").close()
        self.rewind(since or 0)

    def rewind(self, step: int) -> None:
        """Keep the records of steps before `step` only: the run goes on from a checkpoint at
        `step`, and would otherwise log the steps after it twice."""
        if self.file is not None:
            self.file.close()
        if self.board is not None:
            self.board.rewind(step)
        # Bounded, whatever the run's length: a sketch of the latencies, the last cosines, a running bubble.
        self.latency_ms: dict[int, Quantiles] = defaultdict(Quantiles)
        self.cos: dict[int, deque[float]] = defaultdict(lambda: deque(maxlen=COSINE_STEPS))
        self.bubble: dict[int, list[float]] = defaultdict(lambda: [0.0, 0])   # gpipe: [sum, count]
        try:
            with rundir.open_file(self.path) as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            lines = []
        kept = []
        for line in lines:
            try:
                rec = json.loads(line)
            except ValueError:
                continue   # a line torn by a crash
            if isinstance(rec, dict) and isinstance(rec.get("step"), int) and rec["step"] < step:
                kept.append(line + "\n")
                self._keep(rec.get("stage"), rec)
        tmp = self.path.with_name(self.path.name + ".tmp")
        with rundir.open_file(tmp, "w") as f:
            f.write("".join(kept))
        tmp.replace(self.path)
        self.file = rundir.open_file(self.path, "a")

    def write(self, stage: int, records: list[dict]) -> None:
        for rec in records:
            if not isinstance(rec, dict):
                continue
            self.file.write(json.dumps({"stage": stage, **rec}) + "\n")
            self._keep(stage, rec)
        self.file.flush()   # a message's records at once: `tail -f` and the failure tests watch the file
        if self.board is not None:
            self.board.write(stage, records)

    def flush(self) -> None:
        """The event files' records to disk now (metrics.jsonl's are, with each message)."""
        if self.board is not None:
            self.board.flush()

    def noted(self, record: dict) -> None:
        """A record of the coordinator's (stage 0) that metrics.jsonl does not hold, the summary does: a
        test-set evaluation, the training clock at a checkpoint. The event files do."""
        if self.board is not None:
            self.board.write(0, [record])

    def _keep(self, stage, rec: dict) -> None:
        """What the summary needs of a record."""
        if isinstance(rec.get("latency_ms"), (int, float)):
            self.latency_ms[stage].add(rec["latency_ms"])
        if isinstance(rec.get("cos"), (int, float)):
            self.cos[stage].append(rec["cos"])
        if isinstance(rec.get("bubble"), (int, float)):
            total = self.bubble[stage]
            total[0], total[1] = total[0] + rec["bubble"], total[1] + 1

    def latency_summary(self) -> dict[str, dict]:
        return {str(k): v.summary() for k, v in sorted(self.latency_ms.items())}

    def synth_cosine(self) -> dict[str, float]:
        """Mean cosine between synthetic gradient and target over the last COSINE_STEPS steps, per stage."""
        return {str(k): float(np.mean(v)) for k, v in sorted(self.cos.items()) if v}

    def bubble_summary(self) -> dict[str, float]:
        """gpipe: the mean fraction of a batch's time each stage sat idle (its bubble), per stage."""
        return {str(k): total / n for k, (total, n) in sorted(self.bubble.items()) if n}

    def close(self) -> None:
        self.file.close()
        if self.board is not None:
            self.board.close()


class Progress:
    """A live line (step, loss, accuracy, samples/s) on a terminal; a log line now and then otherwise."""

    def __init__(self, enabled: bool, total_steps: int, stream=sys.stderr):
        self.enabled, self.total, self.stream = enabled, total_steps, stream
        self.tty = stream.isatty()
        self.start = self.last = time.monotonic()
        self.steps = self.samples = self.correct = 0
        self.loss = None
        self.pos = None   # where training stands (coordinator/position.py), from `at`

    def at(self, pos) -> None:
        """Training goes on from `pos`: a fresh, resumed or rolled back run's position."""
        self.pos, self.steps = pos, pos.step

    def on_done(self, meta: dict) -> None:
        self.steps += 1
        self.samples += meta["n"]
        self.correct += meta["correct"]
        # exponential moving average: the live loss should track, not remember epoch 1
        self.loss = meta["loss"] if self.loss is None else 0.98 * self.loss + 0.02 * meta["loss"]
        now = time.monotonic()
        if self.enabled and now - self.last >= (0.5 if self.tty else 10.0):
            self.last = now
            self.show(now)

    def show(self, now: float) -> None:
        rate = self.samples / max(now - self.start, 1e-9)
        line = (f"step {self.steps}/{self.total}  loss {self.loss:.4f}  "
                f"train acc {self.correct / max(self.samples, 1):.4f}  {rate:,.0f} samples/s")
        self.stream.write(f"\r{line}\x1b[K" if self.tty else line + "\n")
        self.stream.flush()

    def message(self, text: str) -> None:
        if self.enabled:
            self.stream.write(("\r\x1b[K" if self.tty else "") + text + "\n")
            self.stream.flush()
