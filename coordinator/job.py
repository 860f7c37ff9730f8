"""One training job as coordinator: bind, start or await the workers, train, summarise, clean up."""
from __future__ import annotations

import logging
import time
from pathlib import Path

import zmq

from coordinator import checkpoint, config, epochs, launch
from coordinator.control import Membership, Pipeline
from coordinator.metrics import MetricsLog, Progress
from coordinator.plans import Plan
from protocol import liveness

log = logging.getLogger("dni")
# What a run leaves in its directory: any of them there means the directory holds a run.
RUN_FILES = ("metrics.jsonl", "summary.json", checkpoint.MODEL_FILE, "config.json")


def run_dir_for(cfg: config.Config) -> Path:
    """The run directory, made; one that holds a run already is refused unless the user says to reuse it."""
    path = Path(cfg.out or f"runs/{cfg.mode}-{time.strftime('%Y%m%d-%H%M%S')}")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:   # a file there, or on the way there; no permission
        raise config.ConfigError(f"--out {path}: cannot make the run directory ({exc.strerror})") from None
    held = [name for name in RUN_FILES if (path / name).exists()]
    if held and not (cfg.overwrite or getattr(cfg, "resume", False)):
        raise config.ConfigError(f"--out {path} already holds a run ({held[0]}): give another --out, "
                                 "or --overwrite to replace it")
    return path


def serve(plan: Plan, bind: str, spawn_local: bool, curve: dict | None = None) -> dict:
    """Run one training job as coordinator; with spawn_local, start the workers here too.

    `curve` (see Membership) puts CURVE on every socket of the run.
    """
    cfg, n_workers = plan.cfg, plan.n_workers
    run_dir = run_dir_for(cfg)
    metrics = MetricsLog(run_dir)
    progress = Progress(cfg.progress, plan.total_steps)
    ctx = zmq.Context()
    members = Membership(ctx, bind, n_workers, cfg.heartbeat, curve=curve)
    pipe = Pipeline(members, on_metrics=metrics.write, on_done=progress.on_done, path=plan.path(),
                    max_records=plan.wire.log_every, stall=cfg.stall_timeout)
    procs = {}
    try:
        if spawn_local:
            procs = members.procs = launch.spawn(members.endpoint, n_workers)
        log.info("coordinator at %s waiting for %d workers", members.endpoint, n_workers)
        members.register(timeout=None if not spawn_local else liveness.REGISTER_TIMEOUT_S)
        members.assign(plan.roles(), plan.wire.to_meta(), plan.links())
        summary = epochs.train(plan, pipe, run_dir, metrics, progress)
        summary["workers"] = {str(k): v for k, v in members.stop().items()}
        summary["dropped"] = dict(members.drops.counts)   # by the coordinator; each worker's are in its own
        checkpoint.write_json(run_dir / "summary.json", summary)
        summary["run_dir"] = str(run_dir)
        return summary
    finally:
        aborted = not members.stopping
        members.stop(timeout=liveness.ABORT_STOP_TIMEOUT_S) if aborted else None
        pipe.close()
        members.close()
        launch.reap(procs.values(), liveness.ABORT_REAP_TIMEOUT_S if aborted else liveness.REAP_TIMEOUT_S)
        metrics.close()
        ctx.term()


def print_summary(summary: dict, plan: Plan) -> None:
    print(f"mode {summary['mode']}  stages {summary['stages']}  dataset {summary['dataset']}")
    print(f"test accuracy {summary['test_accuracy']:.4f}  train {summary['train_seconds']:.1f} s  "
          f"{summary['samples_per_second']:,.0f} samples/s")
    for stage, lat in summary["update_latency_ms"].items():
        print(f"  stage {stage} update latency p50 {lat['p50']:.3f} ms  p99 {lat['p99']:.3f} ms")
    for line in plan.describe(summary):
        print(line)
    print(f"run directory {summary['run_dir']}")
