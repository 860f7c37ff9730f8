"""GPipe's roles: a hidden stage and the head that add up a batch's micro-batches and update once a batch.

The coordinator feeds a batch as M micro-batches (workers/numerics/microbatch.py) and the next
batch only after stage 1's TAKEN, which it sends once its update is made: every stage above
updates before it hands its last gradient down, so TAKEN is the flush.
"""
from __future__ import annotations

import time

from protocol import Kind, Message
from workers.numerics.gpipe import GPipeHead, GPipeStage
from workers.numerics.microbatch import locate
from workers.roles.head import HeadWorker
from workers.roles.layer import LayerWorker


def batch_record(step: int, latency: float, busy: float) -> dict:
    """A batch's metrics: the update latency (its first forward taken -> the update) and the bubble, the
    fraction of that time the stage sat idle."""
    return {"step": step, "latency_ms": latency * 1e3, "bubble": max(0.0, 1 - busy / latency) if latency > 0 else 0.0}


class GPipeLayerWorker(LayerWorker):
    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.gpipe = GPipeStage(self.stage, self.cfg.micro_batches)
        self.busy = 0.0   # seconds spent on this batch's micro-batches so far

    def grad_fault(self, msg: Message) -> str | None:
        if locate(msg.id, self.gpipe.m)[1] != self.gpipe.grads.count:
            return "gradient out of micro-batch order"   # the sum's order is fixed
        return super().grad_fault(msg)

    def on_forward(self, msg: Message, t: float) -> None:
        b = msg.id
        self.to_peer("next", Kind.FORWARD, b, x=self.gpipe.forward(b, msg.arrays["x"], msg.arrays["y"], t),
                     y=msg.arrays["y"])
        self.busy += time.perf_counter() - t

    def on_grad(self, msg: Message, t: float) -> None:
        b = msg.id   # in flight and next in order: grad_fault saw to it
        target_below, opening = self.gpipe.backward(b, msg.arrays["g"])
        if opening is not None:
            self.stamp(opening)   # the batch's update is made
        if target_below is not None:
            self.to_peer("prev", Kind.GRAD, b, g=target_below)
        if opening is not None and self.stage.first:
            self.to_coordinator(Kind.TAKEN, b)   # the flush: every stage has made its update
        self.busy += time.perf_counter() - t
        if opening is not None:
            self.record(batch_record(locate(b, self.gpipe.m)[0], opening.latency, self.busy))
            self.busy = 0.0


class GPipeHeadWorker(HeadWorker):
    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.gpipe = GPipeHead(self.stage, self.cfg.micro_batches)
        self.opened = 0.0   # when the batch's first micro-batch was taken
        self.tally = [0.0, 0, 0]   # the batch so far: summed loss, correct, examples
        self.busy = 0.0

    def on_forward(self, msg: Message, t: float) -> None:
        b, y = msg.id, msg.arrays["y"]
        if not self.gpipe.kept:
            self.opened = t
        loss, correct, full = self.gpipe.forward(b, msg.arrays["x"], y)
        self.tally = [self.tally[0] + loss * len(y), self.tally[1] + correct, self.tally[2] + len(y)]
        if full:
            for micro, g in self.gpipe.backwards():   # the update is made before the last goes down
                latency = time.perf_counter() - self.opened
                self.to_peer("prev", Kind.GRAD, micro, g=g)
            loss_sum, correct, n = self.tally
            # One report a batch, under its last micro-batch's id (the id the coordinator awaits).
            self.to_coordinator(Kind.DONE, b, {"loss": loss_sum / n, "correct": correct, "n": n})
        self.busy += time.perf_counter() - t
        if full:
            self.record({**batch_record(locate(b, self.gpipe.m)[0], latency, self.busy), "loss": loss_sum / n,
                         "accuracy": correct / n})
            self.tally, self.busy = [0.0, 0, 0], 0.0
