"""GPipe's feeding: a training batch goes in as its M micro-batches, and the next waits for the flush."""
from __future__ import annotations

import numpy as np

from coordinator.control.pipeline import Pipeline
from protocol import Kind, Message
from protocol.sockets import send
from workers.numerics.microbatch import ids, split


class FlushedPipeline(Pipeline):
    """A Pipeline whose training batches are split into `micro_batches` parts (wire ids microbatch.ids);
    a batch is reported (the head's DONE) and flushed (stage 1's TAKEN, once its update is made, the last
    of all stages') under its last micro-batch's id. Evaluation batches go in whole, as ever."""

    def __init__(self, *args, micro_batches: int, **kw):
        super().__init__(*args, **kw)
        self.m = micro_batches

    def first_id(self, step: int) -> int:
        return ids(step, self.m)[0]

    def send_batch(self, kind: Kind, b: int, x: np.ndarray, y: np.ndarray) -> None:
        if kind is not Kind.FORWARD:
            return super().send_batch(kind, b, x, y)
        self.wait(lambda: not self.untaken, f"the flush before training batch {b}")
        micro = ids(b, self.m)
        for i, part in zip(micro, split(len(x), self.m)):
            for stage, arrays in self.split(x[part], y[part]).items():
                send(self.feed_to(stage), Message(kind, "coordinator", i, {}, arrays))
        self.pending.add((kind, micro[-1]))
        self.untaken.add(micro[-1])
