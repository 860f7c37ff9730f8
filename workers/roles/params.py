"""The parameter service: one copy of the tied weights for boxes in other processes, with bounded staleness.

Protocol (every message into the service's inbox, every answer into the asking box's inbox):
  PUSH   {version, read, need, bound, ask} + grads   a box's gradients, computed with its copy of `version`,
                               `read` updates old as far as the box knew when it read it (tiedcopy.py); and
                               its request number `ask` for the weights of its next unroll: at least version `need`
                               (backprop: this batch applied), at most `bound` updates old (--max-staleness
                               less the K-1 pushes the other boxes make before that unroll, at least 0).
                               The answer goes out as soon as `need` is reached. A decoupled box does not
                               wait for it while its copy is within the bound.
  PULL   {have, need, bound, ask}  the same request alone: a box's first unroll, the first after a barrier,
                               every evaluation's, and one after a batch without gradients.
  PARAMS {version, staleness} the answer, its id the request's `ask`: the weights themselves only when the
                               box's copy is too old (or too early), else nothing but how old it is.
  SYNC                        a box's barrier marker, behind its pushes: when all K are in, the
                               service tells the coordinator SYNCED.
A read's staleness is counted from the push it led to (max_read_staleness, never above the bound); the
updates that landed between the read and the push show in grad_delay.
"""
from __future__ import annotations

from collections import Counter

import numpy as np

from protocol import Kind, Message, window
from workers.numerics.paramstore import ParamStore
from workers.roles.guard import values_fault
from workers.roles.role import Role


def weights_fault(msg: Message, own: dict[str, np.ndarray]) -> str | None:
    """Arrays named, shaped and typed as some of the tied weights, and finite (weights or their gradients)."""
    for name, a in msg.arrays.items():
        mine = own.get(name)
        if mine is None or a.shape != mine.shape or a.dtype != mine.dtype:
            return "weights of the wrong name, shape or dtype"
    return values_fault(*msg.arrays.values())


class ParamService(Role):
    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.store = ParamStore(self.cfg)
        self.bound, self.boxes = self.cfg.max_staleness, self.cfg.boxes
        self.waiting: list[Message] = []     # requests that need a version not reached yet
        # Box -> the newest version sent it: answers go out in order, so the box holds it by the next answer
        # (its requests may say an older copy: it does not wait for an answer before its next push).
        self.sent: dict[str, int] = {}
        self.markers: Counter = Counter()
        self.counters.update(pulls=0, answers=0, transfers=0, max_read_staleness=0, read_staleness_sum=0,
                             pushes=0, steps=0, max_grad_delay=0, grad_delay_sum=0, bound=self.bound)
        self.handlers.update({Kind.PULL: self.on_pull, Kind.PUSH: self.on_push, Kind.SYNC: self.on_sync})
        self.take((Kind.PULL, Kind.PUSH, Kind.SYNC), *self.names.values())   # only the run's own boxes
        self.checks[Kind.PUSH] = lambda msg: weights_fault(msg, self.store.params())

    def on_pull(self, msg: Message, t: float) -> None:
        self.counters["pulls"] += 1
        self.request(msg)

    def request(self, msg: Message) -> None:
        if self.store.version < msg.meta["need"]:
            # A box has one request open at a time: a newer one from the same name replaces it.
            self.waiting = [m for m in self.waiting if m.src != msg.src] + [msg]
        else:
            self.serve(msg)

    def serve(self, msg: Message) -> None:
        have = max(msg.meta["have"] if msg.kind is Kind.PULL else msg.meta["version"], self.sent.get(msg.src, 0))
        staleness = self.store.version - have
        arrays = {}
        if staleness > min(self.bound, msg.meta["bound"]) or staleness < 0:
            arrays, staleness, have = self.store.snapshot(), 0, self.store.version
            self.sent[msg.src] = have
            self.counters["transfers"] += 1
        self.counters["answers"] += 1
        self.to_peer(msg.src, Kind.PARAMS, msg.meta["ask"], meta={"version": have, "staleness": staleness}, **arrays)

    def on_push(self, msg: Message, t: float) -> None:
        used = msg.meta["version"]   # a count: the schema checked it at decode (the arrays: weights_fault)
        box = int(msg.src.removeprefix("box-"))
        # Partial sums a forged or lost push left behind are forgotten a horizon later.
        window.prune(self.store.partial, msg.id, window.horizon(self.cfg.cache))
        # How many updates landed between the weights this gradient was computed with and now.
        delay = self.store.version - used
        self.counters["pushes"] += 1
        self.counters["read_staleness_sum"] += msg.meta["read"]
        self.counters["max_read_staleness"] = max(self.counters["max_read_staleness"], msg.meta["read"])
        self.counters["grad_delay_sum"] += delay
        self.counters["max_grad_delay"] = max(self.counters["max_grad_delay"], delay)
        self.record({"step": msg.id, "box": box, "grad_delay": delay})
        if self.store.push(msg.id, box, dict(msg.arrays), delay):
            self.counters["steps"] += 1
            ready = [m for m in self.waiting if m.meta["need"] <= self.store.version]
            self.waiting = [m for m in self.waiting if m.meta["need"] > self.store.version]
            for m in ready:
                self.serve(m)
        self.request(msg)   # the weights of the box's next unroll

    def on_sync(self, msg: Message, t: float) -> None:
        self.markers[msg.id] += 1
        window.prune(self.markers, msg.id, window.horizon(self.cfg.cache))
        if self.markers[msg.id] == self.boxes:
            del self.markers[msg.id]
            self.flush_metrics()
            self.to_coordinator(Kind.SYNCED, msg.id)

    def numerics(self):
        return self.store
