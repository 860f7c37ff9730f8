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


def run_dir_for(cfg: config.Config) -> Path:
    path = Path(cfg.out or f"runs/{cfg.mode}-{time.strftime('%Y%m%d-%H%M%S')}")
    path.mkdir(parents=True, exist_ok=True)
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
    pipe = Pipeline(members, on_metrics=metrics.write, on_done=progress.on_done)
    procs = {}
    try:
        if spawn_local:
            procs = members.procs = launch.spawn(members.endpoint, n_workers)
        log.info("coordinator at %s waiting for %d workers", members.endpoint, n_workers)
        members.register(timeout=None if not spawn_local else liveness.REGISTER_TIMEOUT_S)
        members.assign(plan.roles(), plan.wire.to_meta(), plan.links())
        summary = epochs.train(plan, pipe, run_dir, metrics, progress)
        summary["workers"] = {str(k): v for k, v in members.stop().items()}
        checkpoint.write_json(run_dir / "summary.json", summary)
        summary["run_dir"] = str(run_dir)
        return summary
    finally:
        members.stop(timeout=liveness.ABORT_STOP_TIMEOUT_S) if not members.stopping else None
        pipe.close()
        members.close()
        launch.reap(procs.values())
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
