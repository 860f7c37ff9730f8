"""What `dni plot` draws of a run directory: one pass over metrics.jsonl in bounded memory, bad records counted."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from coordinator.quantiles import LIMIT, Quantiles

CURVES = ("loss", "cos", "synth_loss", "staleness")
VALIDATION = ("val_accuracy", "train_seconds")   # a validation record's (--eval-every): both, or neither is drawn
POINTS = 150          # at least this many points a curve (when there are as many steps), at most twice as many
MAX_STEP = 2 ** 53    # every step below it is exact in a float64; a larger one is no run's
MAX_STAGES = 64       # distinct stages drawn, a row each at most: more would make a plot nobody can read
MAX_LINE = 1 << 20    # a record is under 1 KB; a longer line is skipped without being held whole
MAX_SUMMARY = 64 << 20  # a summary is a few KB: a larger file is read no further
BAD = (ValueError, RecursionError)   # what json.loads raises on text that is not JSON (or nested too deep)


class Curve:
    """A value over steps as its mean per bin of steps; the bins double in width whenever there are
    2 * POINTS of them, so memory stays bounded however long the run and whatever order the steps come in."""

    def __init__(self):
        self.width = 1
        self.bins: dict[int, list] = {}   # bin -> [sum of steps, sum of values, count]

    def add(self, step: int, value: float) -> None:
        b = self.bins.setdefault(step // self.width, [0, 0.0, 0])
        b[0] += step
        b[1] += value
        b[2] += 1
        if len(self.bins) > 2 * POINTS:
            self.width *= 2
            merged: dict[int, list] = {}
            for k, (steps, total, n) in self.bins.items():
                m = merged.setdefault(k // 2, [0, 0.0, 0])
                m[0], m[1], m[2] = m[0] + steps, m[1] + total, m[2] + n
            self.bins = merged

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(mean step, mean value) per bin, in step order."""
        bins = [self.bins[k] for k in sorted(self.bins)]
        return np.array([b[0] / b[2] for b in bins]), np.array([b[1] / b[2] for b in bins])


def metrics_file(run_dir: str | Path) -> Path:
    """The run's metrics.jsonl; FileNotFoundError in one line if it is not a run directory."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir}: no metrics.jsonl (is it a dni run directory?)")
    return path


def lines(f):
    """The file's lines, each at most MAX_LINE bytes: a longer one is read past in pieces and given as b""."""
    while line := f.readline(MAX_LINE):
        if len(line) == MAX_LINE and not line.endswith(b"\n"):
            while (rest := f.readline(MAX_LINE)) and not rest.endswith(b"\n"):
                pass
            line = b""
        yield line


def number(value) -> float | None:
    """A finite, bounded number from a record; None for anything else (bool, str, NaN, inf, 10**400, ...)."""
    if (type(value) is float or type(value) is int) and -LIMIT <= value <= LIMIT:   # NaN fails it too
        return float(value)
    return None


def read_metrics(path: Path) -> tuple[dict, dict, int, int]:
    """(curves {stage: {key: Curve}}, latencies {stage: Quantiles}, lines read, lines skipped)."""
    curves: dict[int, dict[str, Curve]] = {}
    latency: dict[int, Quantiles] = {}
    read = skipped = 0
    with open(path, "rb") as f:
        for line in lines(f):
            read += 1
            try:
                rec = json.loads(line)
            except BAD:
                rec = None   # a run cut short may end in half a line; anything else is not a run's
            stage, step = (rec.get("stage"), rec.get("step")) if isinstance(rec, dict) else (None, None)
            if not (type(stage) is int and type(step) is int and 0 <= step < MAX_STEP and 0 <= stage < MAX_STEP
                    and (stage in curves or len(curves) < MAX_STAGES)):
                skipped += 1
                continue
            keys = curves.setdefault(stage, {})
            for key in CURVES:
                if (v := number(rec.get(key))) is not None:
                    keys.setdefault(key, Curve()).add(step, v)
            if None not in (val := [number(rec.get(key)) for key in VALIDATION]):
                for key, v in zip(VALIDATION, val):
                    keys.setdefault(key, Curve()).add(step, v)
            if (v := number(rec.get("latency_ms"))) is not None:
                latency.setdefault(stage, Quantiles()).add(v)
    return curves, latency, read, skipped


def read_summary(path: Path) -> tuple[dict, str | None]:
    """The run's summary.json, or {} and why it was left out (missing, not a file, not a JSON object)."""
    if not path.is_file():
        return {}, None if not path.exists() else f"{path}: not a regular file, left out"
    with open(path, "rb") as f:
        text = f.read(MAX_SUMMARY + 1)
    if len(text) > MAX_SUMMARY:
        return {}, f"{path}: over {MAX_SUMMARY >> 20} MiB, left out"
    try:
        summary = json.loads(text)
    except BAD as exc:
        return {}, f"{path}: not JSON ({str(exc).splitlines()[0][:80]}), left out"
    return (summary, None) if isinstance(summary, dict) else ({}, f"{path}: not a JSON object, left out")


def history(summary: dict) -> list[tuple[float, float]]:
    """(epoch, test accuracy) of each well-formed entry of the summary's history."""
    entries = summary.get("history")
    pairs = [(number(h.get("epoch")), number(h.get("test_accuracy")))
             for h in (entries if isinstance(entries, list) else []) if isinstance(h, dict)]
    return [(e, a) for e, a in pairs if e is not None and a is not None]


def load_run(run_dir: str | Path) -> dict:
    """{'name', 'history', 'series': {stage: {key: (steps, values)}}, 'latency': {stage: Quantiles},
    'notes': what was left out, a line each} of one run directory."""
    run_dir = Path(run_dir)
    curves, latency, read, skipped = read_metrics(metrics_file(run_dir))
    summary, note = read_summary(run_dir / "summary.json")
    notes = [note] if note else []
    if skipped:
        notes.append(f"{run_dir / 'metrics.jsonl'}: {skipped} of {read} lines skipped (not a record of a run)")
    mode, stages = summary.get("mode"), summary.get("stages")
    name = (f"{run_dir.name} ({mode if isinstance(mode, str) and len(mode) <= 20 else '?'}, "
            f"{stages if type(stages) is int and 0 < stages < MAX_STEP else '?'} stages)")
    return {"name": name, "history": history(summary), "latency": latency, "notes": notes,
            "series": {stage: {k: c.arrays() for k, c in keys.items()} for stage, keys in curves.items()}}
