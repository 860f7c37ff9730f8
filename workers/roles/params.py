"""The parameter service: the tied weights for boxes in other processes, pushed to them, with bounded staleness.

Protocol (every message into the service's inbox, every answer into the box's inbox):
  PULL   {have, need, bound}  a box holding no lease (at the start, after a barrier; with
                               --max-staleness 0, before every read) holds version `have`; it needs at
                               least version `need` (backprop: every earlier batch applied) and a copy at
                               most `bound` updates old. It waits for the answer.
  PARAMS {version, pull, applied}  the weights of `version` (or nothing but the version, when the box's
                               copy is fresh enough), and how many of the box's pushes have landed: the
                               answer to pull number `pull`, or, with pull 0, sent unasked: in dni/cdni
                               once the box's own push lands or its copy is --push-every updates old, in
                               backprop after every step.
  PUSH   {version} + grads    a box's gradients, computed with the copy of `version`.
  HAVE   {version}            a box holds (and reads from now on) the copy of `version` it was sent unasked.
  SYNC                        a box's barrier marker, behind its pushes: when all K are in, every held
                               push is applied, the leases end and the service tells the coordinator SYNCED.

The lease (dni/cdni): a pull's answer leases the box its copy, and HAVE moves the lease on to a
newer one. No step is taken that would leave a leased copy more than --max-staleness updates
behind: such a push waits until the box has the newer copy sent to it (a round trip, not a
batch). The boxes never wait for the service; its steps may. A read's staleness, counted when
the box's push arrives (max_read_staleness), is at least the true one and never above the bound.
"""
from __future__ import annotations

from collections import Counter, deque

import numpy as np

from protocol import Kind, Message, window
from workers.numerics.paramstore import ParamStore
from workers.roles.guard import values_fault
from workers.roles.role import Role

# A box may have this many of its pushes waiting in the service (held by a lease) and still read: one
# more and it waits for them to land, so a service that cannot keep up slows the boxes instead of
# piling up their gradients.
PUSHES_AHEAD = 2


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
        self.locked = self.cfg.mode == "backprop"
        # Backprop's boxes need every step, at once; with bound 0 no copy can be leased (every read pulls).
        self.leasing = not self.locked and self.bound > 0
        self.every = 1 if self.locked else min(self.cfg.push_every, self.bound)
        self.waiting: list[Message] = []     # pulls that need a version not reached yet
        self.leases: dict[str, int] = {}     # box -> the version of the copy it reads: kept within the bound
        self.sent: dict[str, int] = {}       # box -> the version of the newest copy sent to it
        self.pending: deque[tuple[Message, int]] = deque()   # pushes (and their read's staleness) not yet applied
        self.answers: Counter = Counter()    # PARAMS sent to each box: their ids
        self.applied: Counter = Counter()    # pushes from each box that landed
        self.markers: Counter = Counter()
        self.counters.update(pulls=0, transfers=0, reads=0, max_read_staleness=0, read_staleness_sum=0,
                             pushes=0, max_pending=0, steps=0, max_grad_delay=0, grad_delay_sum=0, bound=self.bound)
        self.handlers.update({Kind.PULL: self.on_pull, Kind.PUSH: self.on_push, Kind.HAVE: self.on_have,
                              Kind.SYNC: self.on_sync})
        self.take((Kind.PULL, Kind.PUSH, Kind.HAVE, Kind.SYNC), *self.names.values())   # only the run's own boxes
        self.checks[Kind.PUSH] = lambda msg: weights_fault(msg, self.store.params())

    # -- sending weights ------------------------------------------------------------------
    def send_params(self, box: str, version: int, pull: int = 0, weights: bool = True) -> None:
        arrays = self.store.snapshot() if weights else {}
        self.counters["transfers"] += weights
        self.answers[box] += 1
        self.sent[box] = max(self.sent.get(box, 0), version)
        self.to_peer(box, Kind.PARAMS, self.answers[box],
                     meta={"version": version, "pull": pull, "applied": self.applied[box]}, **arrays)

    def push_copies(self) -> None:
        """New weights to every box whose copy is --push-every updates old (backprop: every box, every step)."""
        for box, version in self.sent.items():
            if (box in self.leases or self.locked) and self.store.version - version >= self.every:
                self.send_params(box, self.store.version)

    # -- pulls ----------------------------------------------------------------------------
    def on_pull(self, msg: Message, t: float) -> None:
        if self.store.version < msg.meta["need"]:
            # A box has one pull open at a time: a newer one from the same name replaces it.
            self.waiting = [m for m in self.waiting if m.src != msg.src] + [msg]
        else:
            self.serve(msg)

    def serve(self, msg: Message) -> None:
        have, version = msg.meta["have"], self.store.version
        self.counters["pulls"] += 1
        stale = not 0 <= version - have <= min(self.bound, msg.meta["bound"])
        if self.leasing:
            self.leases[msg.src] = version if stale else have
        elif not self.locked:   # the box reads what this answer gives it, now
            self.count_read(0 if stale else version - have)
        self.send_params(msg.src, version if stale else have, msg.id, weights=stale)

    # -- pushes and the lease -------------------------------------------------------------
    def on_push(self, msg: Message, t: float) -> None:
        used = msg.meta["version"]   # a count: the schema checked it at decode (the arrays: weights_fault)
        # Partial sums a forged or lost push left behind are forgotten a horizon later.
        window.prune(self.store.partial, msg.id, window.horizon(self.cfg.cache))
        # The box read `used` before now: at most this many updates had landed beyond it then.
        read = max(self.store.version - used, 0)
        if self.leasing or self.locked:
            self.count_read(read)
        self.pending.append((msg, read))
        self.apply()

    def on_have(self, msg: Message, t: float) -> None:
        if msg.src in self.leases and msg.meta["version"] <= self.sent[msg.src]:   # not a copy it was never sent
            self.leases[msg.src] = max(self.leases[msg.src], msg.meta["version"])
            self.apply()

    def count_read(self, staleness: int) -> None:
        self.counters["reads"] += 1
        self.counters["read_staleness_sum"] += staleness
        self.counters["max_read_staleness"] = max(self.counters["max_read_staleness"], staleness)

    def allowed(self) -> bool:
        """Whether one more step leaves every leased copy within the bound."""
        return not self.leases or self.store.version + 1 - min(self.leases.values()) <= self.bound

    def apply(self) -> None:
        while self.pending and self.allowed():
            msg, read = self.pending.popleft()
            self.step(msg, read)
        self.counters["max_pending"] = max(self.counters["max_pending"], len(self.pending))
        self.push_copies()

    def step(self, msg: Message, read: int) -> None:
        box = int(msg.src.removeprefix("box-"))
        # How many updates landed between the weights this gradient was computed with and now.
        delay = self.store.version - msg.meta["version"]
        self.counters["pushes"] += 1
        self.counters["grad_delay_sum"] += delay
        self.counters["max_grad_delay"] = max(self.counters["max_grad_delay"], delay)
        self.record({"step": msg.id, "box": box, "read_staleness": read, "grad_delay": delay})
        self.applied[msg.src] += 1
        if self.store.push(msg.id, box, dict(msg.arrays)):
            self.counters["steps"] += 1
            ready = [m for m in self.waiting if m.meta["need"] <= self.store.version]
            self.waiting = [m for m in self.waiting if m.meta["need"] > self.store.version]
            for m in ready:
                self.serve(m)
        # The box's own update in its copy, and the news a box waiting for its pushes to land waits for
        # (leased or not: a forged barrier marker may have ended its lease here, not there).
        if self.leasing:
            self.send_params(msg.src, self.store.version)

    def on_sync(self, msg: Message, t: float) -> None:
        self.markers[msg.id] += 1
        window.prune(self.markers, msg.id, window.horizon(self.cfg.cache))
        if self.markers[msg.id] == self.boxes:
            del self.markers[msg.id]
            # No box reads before it pulls again: the leases end, and every pending push lands.
            self.leases.clear()
            self.apply()
            self.flush_metrics()
            self.to_coordinator(Kind.SYNCED, msg.id)

    def numerics(self):
        return self.store
