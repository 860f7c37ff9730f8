"""The race's single-process row: `dni run`'s network trained in one process with every core, as a user would first.

`python -m coordinator.bench.single DNI-RUN-OPTIONS`: the same options, task, validation split,
cadence and summary.json fields the race reads as a `dni run` job's, from the transparency
reference (workers/numerics/reference.py) with BLAS on the threads its parent's environment sets (the race: 2).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from workers.runtime import blas  # noqa: F401  (first: it says so if numpy loaded before the threads were set)

# isort: split
import numpy as np

from coordinator import checkpoint, cli, config, plans
from coordinator.metrics import percentiles
from workers.numerics.reference import build_network, evaluate, step
from workers.runtime.memory import peak_rss_mb


def train(plan: plans.Plan) -> dict:
    """Train cfg.epochs; the validation split every --eval-every batches with the clock paused."""
    cfg, task = plan.cfg, plan.task
    net, rng = build_network(plan.wire), np.random.default_rng(cfg.seed)
    validation, step_ms, b, samples, seconds, cpu_s = [], [], 0, 0, 0.0, 0.0

    def validate() -> None:
        validation.append({"step": b - 1, "samples": samples, "train_seconds": seconds,
                           "val_accuracy": evaluate(net, task.x_val, task.y_val, cfg.eval_batch)})

    for _ in range(cfg.epochs):
        for x, y in task.train_batches(rng, cfg.batch_size):
            t, cpu = time.perf_counter(), time.process_time()
            step(net, b, x, y)
            took, cpu_s = time.perf_counter() - t, cpu_s + time.process_time() - cpu
            # One process: stage 1's update is made when the whole step is (backprop's order).
            step_ms.append(took * 1e3)
            b, samples, seconds = b + 1, samples + len(x), seconds + took
            if cfg.eval_every and b % cfg.eval_every == 0:
                validate()
    if cfg.eval_every and b % cfg.eval_every:
        validate()
    return {"mode": cfg.mode, "conv": cfg.conv, "stages": len(net), "steps": b, "train_seconds": seconds,
            "samples_per_second": samples / max(seconds, 1e-9), "validation": validation,
            "test_accuracy": evaluate(net, task.x_test, task.y_test, cfg.eval_batch),
            "update_latency_ms": {"1": percentiles(step_ms)},
            # The one process stands for every stage: its CPU over the training steps, its memory; no links.
            "single": {"cpu_s": cpu_s, "peak_rss_mb": peak_rss_mb()}}


def main(argv: list[str]) -> int:
    cfg = config.from_args(cli.parser().parse_args(["run", *argv]))
    plan = plans.for_config(cfg)
    summary = train(plan)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint.write_json(out / "summary.json", summary)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
