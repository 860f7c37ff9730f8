"""The training schedule on top of the control plane: epochs, evaluation, checkpoints, the summary."""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from coordinator import checkpoint
from coordinator.config import Config
from coordinator.control import Coordinator
from coordinator.data import Dataset, batches
from coordinator.metrics import MetricsLog, Progress
from protocol import Kind

log = logging.getLogger("dni.coordinator")


def network_config(cfg: Config, dataset: Dataset) -> dict:
    """What every worker needs to build its stage: the part of the config that crosses the wire."""
    return {"sizes": [dataset.n_features, *cfg.hidden_sizes(), dataset.n_classes], "mode": cfg.mode,
            "optimizer": cfg.optimizer, "lr": cfg.lr, "schedule": cfg.schedule,
            "total_steps": steps_per_epoch(cfg, dataset) * cfg.epochs,
            "synth_lr": cfg.synth_lr, "synth_hidden": cfg.synth_hidden,
            "seed": cfg.seed, "log_every": cfg.log_every, "cache": cfg.cache()}


def steps_per_epoch(cfg: Config, dataset: Dataset) -> int:
    return -(-len(dataset.x_train) // cfg.batch_size)


def roles(n_stages: int) -> list[str]:
    return ["layer"] * (n_stages - 1) + ["head"]


def train(coord: Coordinator, cfg: Config, dataset: Dataset, run_dir: Path, metrics: MetricsLog,
          progress: Progress) -> dict:
    net = network_config(cfg, dataset)
    saved = {**net, "data": cfg.data, "classes": cfg.classes, "eval_batch": cfg.eval_batch,
             "dataset": dataset.name}
    rng = np.random.default_rng(cfg.seed)
    step, train_seconds, history = 0, 0.0, []
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.perf_counter()
        for x, y in batches(dataset.x_train, dataset.y_train, cfg.batch_size, rng):
            coord.send_batch(Kind.FORWARD, step, x, y, cfg.window)
            step += 1
            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
                coord.sync()
                checkpoint.save(run_dir, saved, coord.collect_state(), step)
        coord.sync()
        train_seconds += time.perf_counter() - t0
        accuracy, loss = coord.evaluate(dataset.x_test, dataset.y_test, cfg.eval_batch, cfg.window)
        history.append({"epoch": epoch, "test_accuracy": accuracy, "test_loss": loss})
        progress.message(f"epoch {epoch}/{cfg.epochs}  test accuracy {accuracy:.4f}  test loss {loss:.4f}")
    checkpoint.save(run_dir, saved, coord.collect_state(), step)
    n_samples = len(dataset.x_train) * cfg.epochs
    return {"mode": cfg.mode, "stages": len(net["sizes"]) - 1, "sizes": net["sizes"], "epochs": cfg.epochs,
            "dataset": dataset.name, "batch_size": cfg.batch_size, "steps": step,
            "test_accuracy": history[-1]["test_accuracy"], "test_loss": history[-1]["test_loss"],
            "history": history, "train_seconds": train_seconds,
            "samples_per_second": n_samples / train_seconds,
            "update_latency_ms": metrics.latency_summary(), "synth_cosine": metrics.synth_cosine()}
