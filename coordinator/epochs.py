"""The one epoch loop: feed, checkpoint, sync, evaluate, the curriculum, the history and the summary.

Where training stands is a `Position`, saved with every checkpoint: a resumed or restarted run
continues from it with the same batches in the same order as an uninterrupted one.
"""
from __future__ import annotations

import time
from dataclasses import asdict
from itertools import islice
from pathlib import Path
from typing import NamedTuple

import numpy as np

from coordinator import checkpoint
from coordinator.control import Pipeline
from coordinator.metrics import MetricsLog, Progress
from coordinator.plans import Plan
from coordinator.position import Position
from coordinator.signals import Interrupted, StopSignals
from protocol import Kind


def save(plan: Plan, pipe: Pipeline, run_dir: Path, pos: Position, metrics: MetricsLog) -> Path:
    """A checkpoint at a barrier: every batch sent so far is through every stage, none is in flight; the
    metrics written before it, so that a run resumed from it has every step before it in its files."""
    pipe.sync()
    metrics.flush()
    return checkpoint.save(run_dir, plan.checkpoint_config(), pipe.collect_state(), asdict(pos))


def validate(plan: Plan, pipe: Pipeline, metrics: MetricsLog, pos: Position) -> dict:
    """The validation split's accuracy now, at a barrier: a record in metrics.jsonl (as stage 0, the
    coordinator, at the last batch's step) and in the summary. The caller pauses the training clock."""
    task = plan.task
    accuracy, loss = pipe.evaluate(task.x_val, task.y_val, plan.eval_batch(plan.cfg))
    record = {"step": pos.step - 1, "samples": pos.samples, "train_seconds": pos.train_seconds,
              "val_accuracy": accuracy, "val_loss": loss}
    metrics.write(0, [record])
    pos.validation.append(record)
    return record


def validated_at(pos: Position) -> int:
    """The batches trained when the validation split was last evaluated (0: not yet)."""
    return pos.validation[-1]["step"] + 1 if pos.validation else 0


class EpochEnd(NamedTuple):
    """What an epoch's end does: a barrier, a validation off the cadence, the test set."""
    sync: bool
    validate: bool
    test: bool


def epoch_end(eval_every: int, pos: Position, settled: bool, last: bool) -> EpochEnd:
    """What the end of an epoch (the last one if `last`) evaluates. Without a validation split: a barrier and
    the test set. With one (--eval-every): the test set only at the last; a validation where the cadence made
    none at this step; but in a stall below (batches queued ahead, the pipe not `settled`) neither barrier nor
    validation, left to the cadence, once there is a validation for the epoch's entry to hold: the stages above
    go on learning."""
    if not eval_every:
        return EpochEnd(sync=True, validate=False, test=True)
    deferred = not last and bool(pos.validation) and not settled
    return EpochEnd(sync=not deferred, validate=not deferred and validated_at(pos) != pos.step, test=last)


def train(plan: Plan, pipe: Pipeline, run_dir: Path, metrics: MetricsLog, progress: Progress, pos: Position,
          stop: StopSignals) -> dict:
    """Train from `pos` to cfg.epochs through the pipeline; returns the summary (summary.json, less the workers).

    Checkpoints every --checkpoint-every steps or --checkpoint-seconds of training, whichever
    comes first, and at the end; on a stop signal, one at the next batch, then Interrupted.
    """
    cfg, task = plan.cfg, plan.task
    last_save = t0 = time.perf_counter()

    def checkpoint_now() -> Path:
        nonlocal last_save, t0
        pos.checkpoints += 1
        path = save(plan, pipe, run_dir, pos, metrics)
        last_save = now = time.perf_counter()
        pos.checkpoint_seconds += now - began   # (the file holds the time up to the one before)
        pos.train_seconds += now - t0
        t0 = now
        metrics.noted({"step": pos.step - 1, "samples": pos.samples, "train_seconds": pos.train_seconds})
        return path

    while pos.epoch < cfg.epochs:
        rng = np.random.Generator(np.random.PCG64())
        rng.bit_generator.state = pos.rng
        t0 = time.perf_counter()
        # Mid-epoch, the epoch's shuffle is drawn again and the batches done are skipped.
        for x, y in islice(task.train_batches(rng, cfg.batch_size), pos.batch, None):
            pipe.send_batch(Kind.FORWARD, pos.step, x, y)
            pos.step += 1
            pos.batch += 1
            pos.samples += len(x)
            # Due every --eval-every batches; one due in a stall below waits until the pipe has settled.
            if cfg.eval_every and pos.step // cfg.eval_every > validated_at(pos) // cfg.eval_every \
                    and pipe.settled():
                pipe.sync()   # the batches sent are trained first: on the clock
                pos.train_seconds += time.perf_counter() - t0
                validate(plan, pipe, metrics, pos)
                t0 = time.perf_counter()
            began = time.perf_counter()
            if stop or (cfg.checkpoint_every and pos.step % cfg.checkpoint_every == 0) or \
                    (cfg.checkpoint_seconds and began - last_save >= cfg.checkpoint_seconds):
                path = checkpoint_now()
                if stop:
                    raise Interrupted(stop.signum, pos.step, path)
        last = pos.epoch + 1 == cfg.epochs
        end = epoch_end(cfg.eval_every, pos, pipe.settled(), last)
        if end.sync:
            pipe.sync()
        pos.train_seconds += time.perf_counter() - t0
        if end.validate:
            validate(plan, pipe, metrics, pos)   # where the epoch ends, off the cadence (or one deferred)
        if end.test:
            accuracy, loss = pipe.evaluate(task.x_test, task.y_test, plan.eval_batch(cfg))
            entry = {"epoch": pos.epoch + 1, "test_accuracy": accuracy, "test_loss": loss}
            metrics.noted({"step": pos.step - 1, "samples": pos.samples, "train_seconds": pos.train_seconds,
                            "test_accuracy": accuracy, "test_loss": loss})
            line = f"epoch {pos.epoch + 1}/{cfg.epochs}  test accuracy {accuracy:.4f}  test loss {loss:.4f}"
            line += plan.after_epoch(entry, last=last)
        else:   # with a validation split, the test set is read once, at the end
            v = pos.validation[-1]
            entry = {"epoch": pos.epoch + 1, "val_accuracy": v["val_accuracy"], "val_loss": v["val_loss"]}
            line = f"epoch {pos.epoch + 1}/{cfg.epochs}  validation accuracy {v['val_accuracy']:.4f}"
        pos.history.append(entry)
        pos.epoch, pos.batch, pos.rng, pos.curriculum = pos.epoch + 1, 0, rng.bit_generator.state, plan.curriculum()
        progress.message(line)
        if stop:
            raise Interrupted(stop.signum, pos.step, save(plan, pipe, run_dir, pos, metrics))
    save(plan, pipe, run_dir, pos, metrics)
    history = pos.history
    return {**plan.summary_fields(), "epochs": cfg.epochs, "dataset": task.name, "batch_size": cfg.batch_size,
            "steps": pos.step, "test_accuracy": history[-1]["test_accuracy"], "test_loss": history[-1]["test_loss"],
            "history": history, "train_seconds": pos.train_seconds,
            "samples_per_second": pos.samples / max(pos.train_seconds, 1e-9), "resumes": pos.resumes,
            "restarts": pos.restarts, "checkpoints": pos.checkpoints, "checkpoint_seconds": pos.checkpoint_seconds,
            "update_latency_ms": metrics.latency_summary(),
            "synth_cosine": metrics.synth_cosine(), "bubble": metrics.bubble_summary(),
            **({"validation": pos.validation} if cfg.eval_every else {})}
