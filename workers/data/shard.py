"""Stage 1's shard of the training data (--feed stage): a training batch named by its examples' indices.

Stage 1 reads the training set the coordinator would build, from the same files and options.
The coordinator still draws each epoch's order and paces the batches (credit, barriers,
checkpoints, evaluation), but sends stage 1 only the indices of a batch's examples; stage 1
takes their rows here, with the same code the coordinator would (workers/data/datasets.py
`rows`), so a batch is the same bytes either way.
"""
from __future__ import annotations

import threading

import numpy as np

from protocol import Message
from workers.data.datasets import Dataset, generated_task, load_mnist, rows

SPEC = ("data", "classes", "seed", "held_out", "first", "centre")   # what names a run's training set


def dataset(spec: dict) -> Dataset:
    """The dataset `spec` names, as the coordinator and stage 1 both build it: MNIST from its `data` directory (only
    its `classes`, if any), else the generated task of its `seed`; the last `held_out` training examples held out as
    the validation split; cut to the `first` ones (0: all); centred on that training set's mean if `centre`."""
    data = load_mnist(spec["data"], spec["classes"] or None) if spec["data"] else generated_task(seed=spec["seed"])
    if spec["held_out"]:
        data = data.held_out(spec["held_out"])
    data = data.first(spec["first"])
    return data.centred() if spec["centre"] else data


class Shard:
    """The training examples stage 1 holds, to take each training batch by its indices.

    Read in a thread of its own (MNIST takes seconds), while the worker's loop heartbeats; the
    worker says READY, and is sent batches, once it is `loaded`.
    """

    def __init__(self, spec: dict):
        if not isinstance(spec, dict) or sorted(spec) != sorted(SPEC):
            raise ValueError(f"--feed stage: the assignment names no training set (want {', '.join(SPEC)})")
        self.x = self.y = self.error = None
        self.reading = threading.Thread(target=self.read, args=(spec,), name="shard", daemon=True)
        self.reading.start()

    def read(self, spec: dict) -> None:
        try:
            data = dataset(spec)
        except (ValueError, TypeError, KeyError, OSError, MemoryError) as exc:   # DataError is a ValueError
            self.error = f"--feed stage: stage 1 cannot read its training set: {exc}"
        else:
            self.x, self.y = data.x_train, data.y_train

    def loaded(self) -> bool:
        """Whether reading is over: the training set read, or `error` says why it could not be."""
        return not self.reading.is_alive()

    def fault(self, msg: Message) -> str | None:
        """Why a FORWARD is no batch of this shard (None: it is one)."""
        index = msg.arrays.get("index")
        if index is None or len(msg.arrays) != 1:
            return "arrays not those of a batch by index"
        if self.x is None:   # (no batch comes before READY, which waits for the training set)
            return "a batch before the training set is read"
        if not len(index) or int(index.min()) < 0 or int(index.max()) >= len(self.x):
            return "example indices outside the training set"
        return None

    def take(self, msg: Message) -> Message:
        """The batch msg names, as the coordinator would have sent it: its examples and labels."""
        x, y = rows(self.x, self.y, msg.arrays["index"].astype(np.intp, copy=False))
        return Message(msg.kind, msg.src, msg.id, msg.meta, {"x": x, "y": y}, msg.peer)
