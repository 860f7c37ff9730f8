"""One training job as coordinator: bind, start or await the workers, train, summarise, clean up."""
from __future__ import annotations

import logging
import time
from pathlib import Path

import zmq

from coordinator import checkpoint, config, launch
from coordinator.control import Coordinator
from coordinator.data import Dataset, generated_task, load_mnist
from protocol import liveness

log = logging.getLogger("dni")


def load_dataset(cfg: config.Config) -> Dataset:
    dataset = load_mnist(cfg.data, cfg.class_list() or None) if cfg.data else generated_task(seed=cfg.seed)
    return dataset.first(cfg.train_subset)


def run_dir_for(cfg: config.Config) -> Path:
    path = Path(cfg.out or f"runs/{cfg.mode}-{time.strftime('%Y%m%d-%H%M%S')}")
    path.mkdir(parents=True, exist_ok=True)
    return path


def serve(cfg: config.Config, bind: str, n_workers: int, spawn_local: bool, dataset: Dataset | None = None,
          curve: dict | None = None) -> dict:
    """Run one training job as coordinator; with spawn_local, start the workers here too.

    `dataset` overrides the one the config names (the benchmarks generate theirs).
    `curve` (see Coordinator) puts CURVE on every socket of the run.
    """
    from coordinator import rnn, trainer
    from coordinator.metrics import MetricsLog, Progress

    plan = rnn if cfg.model == "rnn" else trainer
    if dataset is None:  # fail on bad data before any process starts
        dataset = rnn.load_task(cfg) if plan is rnn else load_dataset(cfg)
    run_dir = run_dir_for(cfg)
    metrics = MetricsLog(run_dir)
    progress = Progress(cfg.progress, plan.steps_per_epoch(cfg, dataset) * cfg.epochs)
    ctx = zmq.Context()
    coord = Coordinator(ctx, bind, n_workers, cfg.heartbeat, curve=curve, on_metrics=metrics.write,
                        on_done=progress.on_done)
    procs = {}
    try:
        if spawn_local:
            procs = coord.procs = launch.spawn(coord.endpoint, n_workers)
        log.info("coordinator at %s waiting for %d workers", coord.endpoint, n_workers)
        coord.register(timeout=None if not spawn_local else liveness.REGISTER_TIMEOUT_S)
        if plan is rnn:
            coord.assign(rnn.roles(cfg), rnn.network_config(cfg, dataset), rnn.links(cfg))
        else:
            coord.assign(trainer.roles(n_workers), trainer.network_config(cfg, dataset))
        summary = plan.train(coord, cfg, dataset, run_dir, metrics, progress)
        summary["workers"] = {str(k): v for k, v in coord.stop().items()}
        checkpoint.write_json(run_dir / "summary.json", summary)
        summary["run_dir"] = str(run_dir)
        return summary
    finally:
        coord.stop(timeout=liveness.ABORT_STOP_TIMEOUT_S) if not coord.stopping else None
        coord.close()
        launch.reap(procs.values())
        metrics.close()
        ctx.term()


def print_summary(summary: dict) -> None:
    print(f"mode {summary['mode']}  stages {summary['stages']}  dataset {summary['dataset']}")
    print(f"test accuracy {summary['test_accuracy']:.4f}  train {summary['train_seconds']:.1f} s  "
          f"{summary['samples_per_second']:,.0f} samples/s")
    for stage, lat in summary["update_latency_ms"].items():
        print(f"  stage {stage} update latency p50 {lat['p50']:.3f} ms  p99 {lat['p99']:.3f} ms")
    if summary.get("model") == "rnn":
        from coordinator import rnn
        print(*rnn.describe(summary), sep="\n")
    print(f"run directory {summary['run_dir']}")
