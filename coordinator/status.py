"""The run's live status, RUN_DIR/status.json: what `dni top` shows, rewritten atomically at most once a second."""
from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections import defaultdict, deque
from pathlib import Path

import numpy as np

from coordinator import rundir
from coordinator.control import Membership
from coordinator.metrics import Progress
from coordinator.plans import Plan
from coordinator.signals import Interrupted
from protocol.roles import title

STATUS_FILE = rundir.STATUS_FILE
VERSION = 1            # of the file's layout: `dni top` refuses another
EVERY_S = 1.0          # rewritten at most this often
RECENT = 100           # a stage's last metric records its latency percentiles and synthesizer cosine cover
RATE_S = 5.0           # seconds the job's samples/s (and its ETA) and a stage's updates/s cover
HELD = 0.5             # a stage held in poll more than this share of the last interval is blocked, or out of credit
log = logging.getLogger("dni")


class StageWindow:
    """What a stage's last metric records said, and when they came."""

    def __init__(self):
        self.latency, self.cos = deque(maxlen=RECENT), deque(maxlen=RECENT)
        self.staleness = None
        self.arrivals: deque[tuple[float, int]] = deque()   # (time.monotonic(), the last step of a METRICS)

    def add(self, now: float, records: list[dict]) -> None:
        steps = [r["step"] for r in records if isinstance(r, dict) and type(r.get("step")) is int]
        if self.arrivals and steps and max(steps) < self.arrivals[-1][1]:
            self.arrivals.clear()   # rolled back to a checkpoint: the rate starts again
        for rec in records:
            if not isinstance(rec, dict):
                continue
            for name, kept in (("latency_ms", self.latency), ("cos", self.cos)):
                if type(rec.get(name)) in (int, float):
                    kept.append(rec[name])
            if type(rec.get("staleness")) is int:
                self.staleness = rec["staleness"]
        if steps:
            self.arrivals.append((now, max(steps)))
        while len(self.arrivals) > 2 and now - self.arrivals[1][0] > RATE_S:
            self.arrivals.popleft()

    def figures(self) -> dict:
        lat = np.asarray(self.latency)
        first, last = (self.arrivals[0], self.arrivals[-1]) if self.arrivals else ((0.0, 0), (0.0, 0))
        return {"updates_per_second": (last[1] - first[1]) / (last[0] - first[0]) if last[0] > first[0] else None,
                "latency_ms": {"p50": float(np.percentile(lat, 50)), "p99": float(np.percentile(lat, 99)),
                               "n": int(lat.size)} if lat.size else None,
                "cos": float(np.mean(self.cos)) if self.cos else None, "staleness": self.staleness}


def load_figures(loads) -> dict:
    """From a worker's last heartbeats (Member.loads; none for a stage that has no worker): CPU %, the share of
    wall time it worked (not waiting in poll), its drops and its state now."""
    if len(loads) < 2:
        return {"cpu_percent": None, "busy": None, "dropped": loads[-1][1]["dropped"] if loads else 0,
                "state": "training"}
    (t0, first), (t_prev, prev), (t1, last) = loads[0], loads[-2], loads[-1]
    span, recent = t1 - t0, max(t1 - t_prev, 1e-9)
    state = "training"
    if (last["blocked"] - prev["blocked"]) / recent > HELD:
        state = "blocked"
    elif (last["held"] - prev["held"]) / recent > HELD:
        state = "waiting for credit"
    return {"cpu_percent": 100 * (last["cpu"] - first["cpu"]) / span,
            "busy": max(0.0, 1 - (last["poll"] - first["poll"]) / span), "dropped": last["dropped"], "state": state}


class Status:
    """Keeps the figures the coordinator receives and writes them for `dni top`; `tick` from the hub's sweep."""

    def __init__(self, run_dir: Path, plan: Plan, members: Membership, progress: Progress):
        self.path, self.plan, self.members, self.progress = run_dir / STATUS_FILE, plan, members, progress
        self.windows: defaultdict[int, StageWindow] = defaultdict(StageWindow)
        self.samples: deque[tuple[float, int]] = deque()   # (time.monotonic(), samples done)
        self.started, self.written, self.ended = time.time(), 0.0, None
        self.broken = False   # a write failed: no more are tried

    def on_records(self, stage: int, records: list[dict]) -> None:
        if stage:   # (stage 0: the coordinator's validation records)
            self.windows[stage].add(time.monotonic(), records)

    def tick(self) -> None:
        now = time.monotonic()
        if now - self.written >= EVERY_S:
            self.written = now
            self.samples.append((now, self.progress.samples))
            while len(self.samples) > 2 and now - self.samples[1][0] > RATE_S:
                self.samples.popleft()
            self.write()

    def end(self, exc: BaseException | None) -> None:
        """The last write: how the run ended."""
        pos = self.progress.pos
        if exc is None:
            self.ended = f"finished after {pos.step} steps, test accuracy {pos.history[-1]['test_accuracy']:.4f}"
        elif isinstance(exc, Interrupted):
            self.ended = f"interrupted: {exc}" + (f" at step {exc.step}, checkpoint saved" if exc.checkpoint else "")
        elif isinstance(exc, KeyboardInterrupt):
            self.ended = "interrupted twice: stopped at once, workers killed"
        else:
            self.ended = f"failed: {exc}"
        self.write()

    def write(self) -> None:
        """Write the file beside it, then rename it over: a reader never sees half of it. One that cannot be
        written is said once, and no more tried: `dni top` cannot follow the run, which goes on all the same."""
        if self.broken:
            return
        tmp = self.path.with_name(STATUS_FILE + ".tmp")
        try:
            with rundir.open_file(tmp, "w") as f:
                json.dump(self.snapshot(), f)
            os.replace(tmp, self.path)
        except (OSError, rundir.RunDirError) as exc:
            self.broken = True
            log.warning("cannot write %s (%s): dni top cannot follow this run", self.path,
                        getattr(exc, "strerror", None) or exc)

    def snapshot(self) -> dict:
        return {"version": VERSION, "updated": time.time(), "started": self.started, "host": socket.gethostname(),
                "pid": os.getpid(), "state": self.state(), "ended": self.ended, "job": self.job(),
                "stages": [self.stage(k) for k in range(1, self.plan.n_workers + 1)]}

    def state(self) -> str:
        members = self.members
        if self.ended is not None:
            return "ended"
        if members.stopping:
            return "stopping"
        if not members.assigned:
            return "starting"
        if len(members.members) < members.n_workers or not all(m.ready for m in members.members.values()):
            return "restarting"
        return "training"

    def job(self) -> dict:
        plan, pos, progress = self.plan, self.progress.pos, self.progress
        (t0, s0), (t1, s1) = (self.samples[0], self.samples[-1]) if self.samples else ((0.0, 0), (0.0, 0))
        rate = (s1 - s0) / (t1 - t0) if t1 > t0 else None
        done = [(f"validation (step {v['step'] + 1})", v["val_accuracy"]) for v in pos.validation[-1:]]
        done += [(f"test (epoch {h['epoch']})", h["test_accuracy"]) for h in pos.history[-1:] if "test_accuracy" in h]
        return {"mode": plan.cfg.mode, "model": plan.cfg.model, "stages": plan.n_workers, "step": pos.step,
                "total_steps": plan.total_steps, "epoch": pos.epoch, "epochs": plan.cfg.epochs,
                "samples_per_second": rate, "loss": progress.loss, "accuracy": done[-1] if done else None,
                "eta_s": (plan.total_steps - pos.step) * plan.cfg.batch_size / rate if rate else None,
                "restarts": pos.restarts, "resumes": pos.resumes}

    def stage(self, k: int) -> dict:
        member, roles = self.members.by_stage().get(k), self.plan.roles()
        row = {"stage": k, "name": title(roles[k - 1], k), "host": None, "pid": None, **self.windows[k].figures(),
               **load_figures(member.loads if member else ())}
        if member is None:
            return {**row, "state": "lost" if self.members.assigned else "starting"}
        row.update(host=member.hello.get("host"), pid=member.hello.get("pid"))
        if member.bye:   # its goodbye counts every drop, by reason
            row["dropped"] = sum(v for v in member.bye.get("dropped", {}).values() if type(v) is int)
        if self.ended is not None or self.members.stopping:
            row["state"] = "stopped"
        elif member.rejoining or not member.ready:
            row["state"] = "rejoining" if self.members.assigned else "starting"
        return row
