"""The hidden-layer role under --mode pipedream: 1F1B in a fixed op order, each backward with its forward's weights.

Inputs and gradients come in whatever order the links deliver them; what comes before its turn
waits (forward kinds in the loop's deferred queue, gradients here), so the stage runs its ops
in the order workers/numerics/pipedream.py's `schedule` gives. The head is the same as in
every mode: its forward, loss, backward and update at once.
"""
from __future__ import annotations

from collections import deque

from protocol import Kind, Message, ProtocolError
from workers.numerics.pipedream import OneFOneB, Stash, backward, forward
from workers.roles.layer import LayerWorker
from workers.roles.role import update_record


class PipeDreamWorker(LayerWorker):
    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.order = OneFOneB(self.stage_index, len(self.cfg.sizes) - 1)
        self.stash = Stash(keeps_weights=not self.stage.first)
        self.early: deque[Message] = deque()   # gradients (in id order, from one sender) before their turn

    def held(self) -> bool:
        """A forward waits while the stage has its limit of batches in flight."""
        return not self.order.may_forward()

    def on_forward(self, msg: Message, t: float) -> None:
        b, y = msg.id, msg.arrays["y"]
        if self.link and self.stage.first:
            self.to_coordinator(Kind.TAKEN, b)
        self.order.forwarded()
        h = forward(self.stage, self.stash, b, msg.arrays["x"], y, t)
        self.to_peer("next", Kind.FORWARD, b, x=h, y=y)
        self.backwards()

    def on_grad(self, msg: Message, t: float) -> None:
        if any(m.id == msg.id for m in self.early):   # (a replay or forgery: one backward a batch)
            raise ProtocolError(f"a second gradient for batch {msg.id}, whose backward awaits its turn")
        self.early.append(msg)
        self.backwards()

    def backwards(self) -> None:
        """The backwards whose turn has come, oldest first: each updates at once and sends dL/dx down."""
        while self.early and self.order.may_backward():
            msg = self.early.popleft()
            self.order.backwarded()
            dx, batch, version = backward(self.stage, self.stash, msg.id, msg.arrays["g"])
            self.stamp(batch)
            if dx is not None:
                self.to_peer("prev", Kind.GRAD, msg.id, g=dx)
            self.record({**update_record(msg.id, batch), "weight_version": version})

    def drain(self) -> None:
        """A barrier or evaluation: every forward before it is done, no other comes before the backwards."""
        self.order.drain()
        self.backwards()

    def on_eval(self, msg: Message, t: float) -> None:
        self.drain()
        super().on_eval(msg, t)

    def on_sync(self, msg: Message, t: float) -> None:
        self.drain()
        super().on_sync(msg, t)

    def goodbye(self, error: str | None = None) -> dict:
        return {**super().goodbye(error), "stash": self.stash.peak()}
