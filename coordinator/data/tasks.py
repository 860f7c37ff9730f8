"""The tasks a run trains on: a dataset's images (whole, or as sequences for time boxes), Copy and Repeat Copy."""
from __future__ import annotations

from typing import Iterator, Protocol

import numpy as np

from coordinator.config import Config
from workers.data.datasets import Dataset, batch_indices, batches
from workers.data.shard import dataset
from workers.numerics.sequence_tasks import (
    MNIST_SIDE,
    chunk_sequences,
    copy_task,
    copy_task_dims,
    repeat_copy_task,
    row_sequences,
)

COPY_SYMBOLS = 8
COPY_TEST = 1000        # sequences in the Copy task's test set
PIXELS = MNIST_SIDE * MNIST_SIDE
VALIDATION = 10_000     # the last training examples, held out to be evaluated every --eval-every batches


class Task(Protocol):
    """What the epoch loop trains on and tests with."""
    name: str
    n_classes: int
    x_test: np.ndarray
    y_test: np.ndarray

    def steps_per_epoch(self, batch_size: int) -> int: ...

    def train_batches(self, rng: np.random.Generator, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]: ...


class ImageTask:
    """A dataset's examples, shuffled into batches each epoch: MNIST (or some of its digits) or the generated task.

    spec: what names the dataset (workers/data/shard.py; None: built in code). by_index: a batch is
    (its examples' indices, its labels), the same order and batches, for stage 1 to take the rows of.
    """

    def __init__(self, dataset: Dataset, spec: dict | None = None, by_index: bool = False):
        self.dataset, self.name, self.n_classes = dataset, dataset.name, dataset.n_classes
        self.spec, self.by_index = spec, by_index
        self.x_test, self.y_test = dataset.x_test, dataset.y_test
        self.x_val, self.y_val = dataset.x_val, dataset.y_val   # None: no validation split held out

    def steps_per_epoch(self, batch_size: int) -> int:
        return -(-len(self.dataset.x_train) // batch_size)

    def train_batches(self, rng: np.random.Generator, batch_size: int):
        x, y = self.dataset.x_train, self.dataset.y_train
        if self.by_index:
            return ((idx, y[idx]) for idx in batch_indices(len(x), batch_size, rng))
        return batches(x, y, batch_size, rng)


class CopyTask:
    """The Copy task, or Repeat Copy, with the paper's curriculum: the length grows by one each time it is solved.

    Sequences are batch-major here, x (n, steps, n_in) and y (n, steps) with -1 where nothing is
    scored, padded with silence to fill all K*T steps of the boxes, so the processes stay the same
    while the length grows.
    """

    def __init__(self, cfg: Config, length: int | None = None):
        """length: start there (a checkpoint's evaluated length) instead of at 1."""
        self.steps, self.max_length = cfg.boxes * cfg.steps_per_box, cfg.copy_length
        self.per_epoch, self.seed = cfg.copy_batches, cfg.seed
        self.repeats = repeats(cfg)
        self.n_classes = copy_task_dims(COPY_SYMBOLS, self.repeats)[1]
        self.name = cfg.task
        self.length = 0
        self.grow()
        while length and self.length < length:
            self.grow()

    def sample(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        xs, ys, mask = (repeat_copy_task(rng, n, self.length, self.repeats, COPY_SYMBOLS) if self.repeats
                        else copy_task(rng, n, self.length, COPY_SYMBOLS))
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


def repeats(cfg: Config) -> int:
    """The most times a Repeat Copy sequence is written; 0 for every other task (Copy: once, with no count)."""
    return cfg.copy_repeats if cfg.task == "repeat-copy" else 0


def n_inputs(task: str, steps: int) -> int:
    """Input width of one recurrent step of `task` over `steps` steps in all."""
    return {"mnist01": PIXELS, "mnist01-chunks": PIXELS // max(steps, 1), "seqmnist": MNIST_SIDE,
            "copy": copy_task_dims(COPY_SYMBOLS)[0], "repeat-copy": copy_task_dims(COPY_SYMBOLS, 1)[0]}[task]


def sequences(task: str, x: np.ndarray, steps: int) -> np.ndarray:
    """A batch of `task` as time-major sequences (steps, n, n_in); mnist01 is one step every box repeats."""
    if task == "mnist01":
        return x[None]
    if task == "mnist01-chunks":
        return chunk_sequences(x, steps)
    if task == "seqmnist":
        return row_sequences(x)
    return np.ascontiguousarray(x.transpose(1, 0, 2))


def image_task(cfg: Config, classes: list[int] | None, centre: bool = False) -> ImageTask:
    """MNIST from cfg.data (only `classes`, if given), else the generated task; with --eval-every, its
    last VALIDATION training examples held out; cut to --train-subset, then centred on that training
    set's mean if asked. With --feed stage its batches are their examples' indices, for stage 1's shard."""
    spec = {"data": cfg.data, "classes": list(classes or []), "seed": cfg.seed,
            "held_out": VALIDATION if cfg.eval_every else 0, "first": cfg.train_subset, "centre": centre}
    return ImageTask(dataset(spec), spec, by_index=cfg.feed == "stage")
