"""The roles of a stage above the first under --synthetic-inputs: the layer and the head, fed by the coordinator too.

Each takes a training batch's network input (INPUT, from the coordinator) and its real input
(FORWARD, from the stage below), and updates on the real input, or at once on the network input
fed ahead of it through a stall below (workers/numerics/unlock.py).
An INPUT fed ahead that the stage finds with more input queued behind it was fed ahead of the stage's
own stall (it is the one behind): its real input comes at the chain's pace, and it waits for that
rather than update from I (tallied as `ahead_late`).
Every update has its metrics record at once, marked with the input it used (`input`: synthetic or
real), so a stall below shows in metrics.jsonl as it happens; a fit of M has a record of its own.
"""
from __future__ import annotations

import time

import zmq

from protocol import Kind, Message
from workers.numerics.unlock_steps import data_step, head_data_step, head_real_step, real_step
from workers.roles.guard import batch_fault, input_fault, network_input
from workers.roles.head import HeadWorker
from workers.roles.layer import LayerWorker
from workers.roles.role import update_record


class Unlocked:
    """What the layer and the head share: taking INPUT, and matching a batch's two halves."""

    def unlock_setup(self) -> None:
        sizes, k, unlock = self.cfg.sizes, self.stage_index, self.stage.unlock
        self.ahead_late = 0   # INPUTs fed ahead that came with more input behind them: the real input was waited for
        self.handlers[Kind.INPUT] = self.on_input
        self.take((Kind.INPUT,), "coordinator")
        self.checks[Kind.INPUT] = lambda msg: input_fault(msg, sizes[0], sizes[-1], unlock.real.get(msg.id))
        self.checks[Kind.FORWARD] = lambda msg: batch_fault(msg, sizes[k - 1], sizes[-1]) or self.halves_fault(msg)

    def fed_ahead(self, msg: Message) -> bool:
        """Whether INPUT msg is to be taken as fed ahead: marked so, and no input queued behind it. Input queued
        behind it means the stage itself is behind (it stalled, or is catching up): stage 1 was not stalled, and
        the real input of msg's batch comes at the chain's pace, so an update through I now keeps no stage
        learning that would otherwise wait (docs/benchmarks.md, the stall)."""
        if not msg.meta.get("ahead", True):
            return False
        late = bool(self.inbox.getsockopt(zmq.EVENTS) & zmq.POLLIN)
        self.ahead_late += late
        return not late

    def halves_fault(self, msg: Message) -> str | None:
        """A real input must match the rows of its network input, if that came first (as INPUT must, input_fault)."""
        data = self.stage.unlock.data.get(msg.id)
        return None if data is None or len(data[0]) == len(msg.arrays["x"]) else "input of the wrong shape or dtype"

    def tallies(self) -> dict:
        unlock = self.stage.unlock
        return {**super().tallies(), "synthetic_updates": unlock.synthetic, "halves_evicted": unlock.evicted,
                "ahead_late": self.ahead_late}


class UnlockedLayerWorker(Unlocked, LayerWorker):
    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.unlock_setup()

    def on_input(self, msg: Message, t: float) -> None:
        batch = data_step(self.stage, msg.id, network_input(msg), msg.arrays["y"], self.fed_ahead(msg), t)
        if batch is not None:
            self.stamp(batch)
            self.record({**update_record(msg.id, batch), "input": "synthetic"})

    def on_forward(self, msg: Message, t: float) -> None:
        b, y = msg.id, msg.arrays["y"]
        batch = real_step(self.stage, b, msg.arrays["x"], y, t, lambda h: self.to_peer("next", Kind.FORWARD, b,
                                                                                       x=h, y=y))
        if batch is not None:
            self.stamp(batch)
            self.record({**update_record(b, batch), "input": "real"})

    def on_grad(self, msg: Message, t: float) -> None:
        self.clock.lap("compute")
        fit, target_below = self.stage.learn(msg.id, msg.arrays["g"])
        self.clock.lap("synth")
        if target_below is not None:
            self.to_peer("prev", Kind.GRAD, msg.id, g=target_below)
        self.record(fit and {**update_record(msg.id, fit=fit), "input_loss": self.stage.unlock.loss})


class UnlockedHeadWorker(Unlocked, HeadWorker):
    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.unlock_setup()

    def decided(self, taken: int, updates: int, t: float, used: str) -> dict:
        """The record of an update this handler decided on (else {}): its latency, or that it was skipped."""
        if self.stage.draws.taken == taken:
            return {}
        updated = self.stage.updates > updates
        made = {"time": time.time(), "latency_ms": (time.perf_counter() - t) * 1e3} if updated else {"skipped": True}
        return {**made, "input": used}

    def on_input(self, msg: Message, t: float) -> None:
        taken, updates = self.stage.draws.taken, self.stage.updates
        head_data_step(self.stage, msg.id, network_input(msg), msg.arrays["y"], self.fed_ahead(msg))
        if made := self.decided(taken, updates, t, "synthetic"):
            self.record({"step": msg.id, **made})

    def on_forward(self, msg: Message, t: float) -> None:
        b, y = msg.id, msg.arrays["y"]
        taken, updates = self.stage.draws.taken, self.stage.updates
        loss, correct = head_real_step(self.stage, b, msg.arrays["x"], y, lambda g: self.to_peer("prev", Kind.GRAD,
                                                                                                 b, g=g))
        self.to_coordinator(Kind.DONE, b, {"loss": loss, "correct": correct, "n": len(y)})
        self.record({"step": b, **self.decided(taken, updates, t, "real"), "loss": loss,
                     "accuracy": correct / len(y), "input_loss": self.stage.unlock.loss})
