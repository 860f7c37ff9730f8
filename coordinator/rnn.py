"""`--model rnn`: the role plan, the tasks, what each time box is fed, and the training schedule."""
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

from coordinator import checkpoint
from coordinator.config import Config, ConfigError
from coordinator.data import Dataset, batches, load_mnist
from coordinator.metrics import MetricsLog, Progress
from protocol import Kind
from workers.numerics.sequence_tasks import MNIST_SIDE, chunk_sequences, copy_task, copy_task_dims, row_sequences

COPY_SYMBOLS = 8
COPY_TEST = 1000        # sequences in the Copy task's test set
SOLVED_BITS = 0.15      # the paper's curriculum: a length is solved below 0.15 bits per output
PIXELS = MNIST_SIDE * MNIST_SIDE


def n_workers(cfg: Config) -> int:
    """One process per time box, plus the parameter service when the weights are tied."""
    return cfg.boxes + (0 if cfg.untied else 1)


def roles(cfg: Config) -> list[str]:
    return ["box"] * cfg.boxes + ([] if cfg.untied else ["params"])


def links(cfg: Config) -> dict[int, dict[str, int | None]]:
    """Who sends to whom: each box to its neighbours in time and to the service, the service to every box."""
    K = cfg.boxes
    plan = {j: {"prev": j - 1 if j > 1 else None, "next": j + 1 if j < K else None} for j in range(1, K + 1)}
    if not cfg.untied:
        for j in range(1, K + 1):
            plan[j]["params"] = K + 1
        plan[K + 1] = {f"box-{j}": j for j in range(1, K + 1)}
    return plan


def n_inputs(cfg: Config) -> int:
    return {"mnist01": PIXELS, "mnist01-chunks": PIXELS // max(cfg.boxes * cfg.steps_per_box, 1),
            "seqmnist": MNIST_SIDE, "copy": copy_task_dims(COPY_SYMBOLS)[0]}[cfg.task]


class ImageTask:
    """MNIST images as sequences: the seed's 0-versus-1 task (whole or in chunks) or row by row."""

    def __init__(self, dataset: Dataset):
        self.dataset, self.name, self.n_classes = dataset, dataset.name, dataset.n_classes
        self.x_test, self.y_test = dataset.x_test, dataset.y_test

    def steps_per_epoch(self, batch_size: int) -> int:
        return -(-len(self.dataset.x_train) // batch_size)

    def train_batches(self, rng: np.random.Generator, batch_size: int):
        return batches(self.dataset.x_train, self.dataset.y_train, batch_size, rng)


class CopyTask:
    """The Copy task with the paper's curriculum: the length grows by one each time it is solved.

    Sequences are batch-major here, x (n, steps, n_in) and y (n, steps) with -1 where nothing is
    scored, padded with silence to fill all K*T steps of the boxes, so the processes stay the same
    while the length grows.
    """

    def __init__(self, cfg: Config):
        self.steps, self.max_length = cfg.boxes * cfg.steps_per_box, cfg.copy_length
        self.per_epoch, self.seed = cfg.copy_batches, cfg.seed
        self.n_classes = copy_task_dims(COPY_SYMBOLS)[1]
        self.name = "copy"
        self.length = 0
        self.grow()

    def sample(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        xs, ys, mask = copy_task(rng, n, self.length, COPY_SYMBOLS)
        x = np.zeros((n, self.steps, xs.shape[2]), np.float32)
        x[:, :len(xs)] = xs.transpose(1, 0, 2)
        y = np.full((n, self.steps), -1, np.int64)
        y[:, :len(ys)] = np.where(mask.T > 0, ys.T, -1)
        return x, y

    def grow(self) -> None:
        self.length += 1
        self.x_test, self.y_test = self.sample(np.random.default_rng([self.seed, self.length, 1]), COPY_TEST)

    def steps_per_epoch(self, batch_size: int) -> int:
        return self.per_epoch

    def train_batches(self, rng: np.random.Generator, batch_size: int):
        return (self.sample(rng, batch_size) for _ in range(self.per_epoch))


def load_task(cfg: Config, copy_length: int | None = None) -> ImageTask | CopyTask:
    if cfg.task == "copy":
        task = CopyTask(cfg)
        while copy_length and task.length < copy_length:
            task.grow()
        return task
    if not cfg.data:
        raise ConfigError(f"--task {cfg.task} reads MNIST: give --data DIR (--task copy needs no data)")
    dataset = load_mnist(cfg.data, [0, 1] if cfg.task.startswith("mnist01") else cfg.class_list() or None)
    return ImageTask(dataset.first(cfg.train_subset))


def splitter(cfg: Config):
    """split(x, y) -> {box: arrays}: every box gets its own slice of the input straight from the coordinator.

    Why direct, not through box 1: each box's input is ready at once and crosses one socket, not
    j of them (box 1 forwarding would carry the whole rest of the sequence down the chain); the
    state message stays small. The cost is K sends per batch instead of one and a join at each
    box (slice + state, by batch id). The credit window is still one credit per batch, returned
    by the last box's DONE. Labels go to box 1 and then travel with the state.
    """
    K, T = cfg.boxes, cfg.steps_per_box

    def sequences(x: np.ndarray) -> np.ndarray:
        if cfg.task == "mnist01":
            return x[None]  # one step of input that every box repeats at each of its steps
        if cfg.task == "mnist01-chunks":
            return chunk_sequences(x, K * T)
        if cfg.task == "seqmnist":
            return row_sequences(x)
        return np.ascontiguousarray(x.transpose(1, 0, 2))

    def split(x: np.ndarray, y: np.ndarray) -> dict[int, dict[str, np.ndarray]]:
        xs = sequences(x)
        parts = {j: {"x": xs if len(xs) == 1 else xs[(j - 1) * T:j * T]} for j in range(1, K + 1)}
        parts[1]["y"] = y
        return parts

    return split


def steps_per_epoch(cfg: Config, task) -> int:
    return task.steps_per_epoch(cfg.batch_size)


def network_config(cfg: Config, task) -> dict:
    """What every box and the service need to build themselves: the part of the config that crosses the wire."""
    return {"model": "rnn", "task": cfg.task, "mode": cfg.mode, "cell": cfg.cell, "units": cfg.units,
            "n_in": n_inputs(cfg), "n_classes": task.n_classes, "boxes": cfg.boxes,
            "steps_per_box": cfg.steps_per_box, "untied": cfg.untied, "max_staleness": cfg.max_staleness,
            "optimizer": cfg.optimizer, "lr": cfg.lr, "schedule": cfg.schedule,
            "total_steps": steps_per_epoch(cfg, task) * cfg.epochs,
            "synth_lr": cfg.synth_lr, "synth_hidden": cfg.synth_hidden, "synth_scale": cfg.synth_scale,
            "seed": cfg.seed,
            "log_every": cfg.log_every, "cache": cfg.cache()}


def train(coord, cfg: Config, task, run_dir: Path, metrics: MetricsLog, progress: Progress) -> dict:
    net = network_config(cfg, task)
    saved = {**net, "data": cfg.data, "classes": cfg.classes, "eval_batch": cfg.eval_batch,
             "dataset": task.name, "copy_length": cfg.copy_length, "copy_batches": cfg.copy_batches}
    split = splitter(cfg)
    rng = np.random.default_rng(cfg.seed)
    step, train_seconds, history, solved, samples = 0, 0.0, [], 0, 0
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.perf_counter()
        for x, y in task.train_batches(rng, cfg.batch_size):
            coord.send_batch(Kind.FORWARD, step, x, y, cfg.window, split)
            step += 1
            samples += len(x)
            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
                coord.sync()
                checkpoint.save(run_dir, {**saved, "eval_length": getattr(task, "length", 0)},
                                coord.collect_state(), step)
        coord.sync()
        train_seconds += time.perf_counter() - t0
        accuracy, loss = coord.evaluate(task.x_test, task.y_test, cfg.eval_batch, cfg.window, split)
        entry = {"epoch": epoch, "test_accuracy": accuracy, "test_loss": loss}
        line = f"epoch {epoch}/{cfg.epochs}  test accuracy {accuracy:.4f}  test loss {loss:.4f}"
        if isinstance(task, CopyTask):
            bits = loss / math.log(2)
            entry.update(copy_length=task.length, bits=bits)
            line += f"  length {task.length}  {bits:.3f} bits"
            if bits < SOLVED_BITS:
                solved = task.length
                if task.length < task.max_length:
                    task.grow()
        history.append(entry)
        progress.message(line)
    checkpoint.save(run_dir, {**saved, "eval_length": history[-1].get("copy_length", 0)}, coord.collect_state(), step)
    summary = {"model": "rnn", "mode": cfg.mode, "task": cfg.task, "cell": cfg.cell, "units": cfg.units,
               "boxes": cfg.boxes, "steps_per_box": cfg.steps_per_box, "untied": cfg.untied,
               "max_staleness": cfg.max_staleness, "stages": cfg.boxes, "epochs": cfg.epochs,
               "dataset": task.name, "batch_size": cfg.batch_size, "steps": step,
               "test_accuracy": history[-1]["test_accuracy"], "test_loss": history[-1]["test_loss"],
               "history": history, "train_seconds": train_seconds, "samples_per_second": samples / train_seconds,
               "update_latency_ms": metrics.latency_summary(), "synth_cosine": metrics.synth_cosine()}
    if isinstance(task, CopyTask):
        summary["copy_solved"] = solved
    return summary


def describe(summary: dict) -> list[str]:
    """The rnn lines of the printed summary: the parameter service's staleness, the Copy curriculum."""
    lines = []
    service = summary.get("workers", {}).get(str(summary["boxes"] + 1), {})
    if "pushes" in service:
        mean = service["read_staleness_sum"] / max(service["pulls"], 1)
        delay = service["grad_delay_sum"] / max(service["pushes"], 1)
        lines.append(f"  parameter service: {service['steps']} steps from {service['pushes']} pushes; "
                     f"boxes computed with weights at most {service['max_read_staleness']} updates old "
                     f"(bound {service['bound']}, mean {mean:.2f}, {service['transfers']} transfers in "
                     f"{service['pulls']} pulls); gradients landed up to {service['max_grad_delay']} "
                     f"updates late (mean {delay:.2f})")
    if "copy_solved" in summary:
        lines.append(f"copy task: longest length solved {summary['copy_solved']} (below {SOLVED_BITS} bits per "
                     f"output), boxes of {summary['steps_per_box']} steps")
    return lines


def evaluate_checkpoint(cfg_dict: dict, states: dict[int, dict], data: str) -> tuple[float, int]:
    """(test accuracy, examples) of a saved rnn run, in one process, on the test set its last epoch used."""
    from workers.numerics import rnn_reference
    from protocol.wireconfig import WireConfig

    cfg = Config(data=data or cfg_dict["data"], classes=cfg_dict["classes"], task=cfg_dict["task"],
                 boxes=cfg_dict["boxes"], steps_per_box=cfg_dict["steps_per_box"],
                 copy_length=cfg_dict["copy_length"], copy_batches=cfg_dict["copy_batches"], seed=cfg_dict["seed"])
    task = load_task(cfg, cfg_dict.get("eval_length"))
    boxes, store = rnn_reference.build(WireConfig.from_meta(cfg_dict))
    rnn_reference.load_checkpoint(boxes, store, states)
    split, n = splitter(cfg), cfg_dict["eval_batch"]
    parts = (split(task.x_test[i:i + n], task.y_test[i:i + n]) for i in range(0, len(task.x_test), n))
    return rnn_reference.evaluate(boxes, store, parts)[0], len(task.x_test)
