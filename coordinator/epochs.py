"""The one epoch loop: feed, checkpoint, sync, evaluate, the curriculum, the history and the summary."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from coordinator import checkpoint
from coordinator.control import Pipeline
from coordinator.metrics import MetricsLog, Progress
from coordinator.plans import Plan
from protocol import Kind


def train(plan: Plan, pipe: Pipeline, run_dir: Path, metrics: MetricsLog, progress: Progress) -> dict:
    """Train for cfg.epochs through the pipeline; returns the summary (summary.json, less the workers)."""
    cfg, task = plan.cfg, plan.task
    rng = np.random.default_rng(cfg.seed)
    step, samples, train_seconds, history = 0, 0, 0.0, []
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.perf_counter()
        for x, y in task.train_batches(rng, cfg.batch_size):
            pipe.send_batch(Kind.FORWARD, step, x, y, cfg.window, plan.split)
            step += 1
            samples += len(x)
            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
                pipe.sync()
                checkpoint.save(run_dir, plan.checkpoint_config(), pipe.collect_state(), step)
        pipe.sync()
        train_seconds += time.perf_counter() - t0
        accuracy, loss = pipe.evaluate(task.x_test, task.y_test, cfg.eval_batch, cfg.window, plan.split)
        entry = {"epoch": epoch, "test_accuracy": accuracy, "test_loss": loss}
        line = f"epoch {epoch}/{cfg.epochs}  test accuracy {accuracy:.4f}  test loss {loss:.4f}"
        line += plan.after_epoch(entry, last=epoch == cfg.epochs)
        history.append(entry)
        progress.message(line)
    checkpoint.save(run_dir, plan.checkpoint_config(), pipe.collect_state(), step)
    return {**plan.summary_fields(), "epochs": cfg.epochs, "dataset": task.name, "batch_size": cfg.batch_size,
            "steps": step, "test_accuracy": history[-1]["test_accuracy"], "test_loss": history[-1]["test_loss"],
            "history": history, "train_seconds": train_seconds, "samples_per_second": samples / train_seconds,
            "update_latency_ms": metrics.latency_summary(), "synth_cosine": metrics.synth_cosine()}
