"""The head role: owns the loss, updates from the true gradient, returns credits to the coordinator."""
from __future__ import annotations

import time

from protocol import Kind, Message
from workers.numerics.stage import HeadStage, build, head_step
from workers.roles.guard import batch_fault
from workers.roles.role import Role


class HeadWorker(Role):
    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.stage: HeadStage = build(self.stage_index, self.cfg)
        self.handlers.update({Kind.FORWARD: self.on_forward, Kind.EVAL: self.on_eval,
                              Kind.SYNC: self.on_sync})
        sizes = self.cfg.sizes
        self.take((Kind.FORWARD, Kind.EVAL, Kind.SYNC), self.upstream())
        for kind in (Kind.FORWARD, Kind.EVAL):
            self.checks[kind] = lambda msg: batch_fault(msg, sizes[-2], sizes[-1])

    def on_forward(self, msg: Message, t: float) -> None:
        b, y = msg.id, msg.arrays["y"]

        def send_back(g):   # the true gradient, sent before the head's own update
            self.to_peer("prev", Kind.GRAD, b, g=g)

        updates = self.stage.updates
        loss, correct, _ = head_step(self.stage, msg.arrays["x"], y, send_back)
        latency = time.perf_counter() - t
        self.to_coordinator(Kind.DONE, b, {"loss": loss, "correct": correct, "n": len(y)})
        made = {"time": time.time(), "latency_ms": latency * 1e3} if self.stage.updates > updates else {"skipped": True}
        self.record({"step": b, **made, "loss": loss, "accuracy": correct / len(y)})

    def on_eval(self, msg: Message, t: float) -> None:
        loss_sum, correct = self.stage.evaluate(msg.arrays["x"], msg.arrays["y"])
        self.to_coordinator(Kind.EVALUATED, msg.id, {"loss_sum": loss_sum, "correct": correct,
                                                     "n": len(msg.arrays["y"])})

    def on_sync(self, msg: Message, t: float) -> None:
        self.flush_metrics()
        self.to_peer("prev", Kind.SYNC_BACK, msg.id)

    def numerics(self):
        return self.stage

    def tallies(self) -> dict:
        return {"updates": self.stage.updates}
