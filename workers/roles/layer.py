"""The hidden-layer role: forward, send on at once, update from the synthesizer, learn from targets."""
from __future__ import annotations

from protocol import Kind, Message
from workers.data.shard import Shard
from workers.numerics.stage import Stage, build, train_step
from workers.roles.guard import NOT_IN_FLIGHT, batch_fault, grad_fault
from workers.roles.role import Role, RoleFailed, update_record


class LayerWorker(Role):
    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.stage: Stage = build(self.stage_index, self.cfg)
        self.handlers.update({Kind.FORWARD: self.on_forward, Kind.GRAD: self.on_grad,
                              Kind.EVAL: self.on_eval, Kind.SYNC: self.on_sync,
                              Kind.SYNC_BACK: self.on_sync_back, Kind.CREDIT: self.on_credit})
        sizes, k = self.cfg.sizes, self.stage_index
        self.take((Kind.FORWARD, Kind.EVAL, Kind.SYNC), self.upstream())
        self.take((Kind.GRAD, Kind.SYNC_BACK), self.names["next"])
        for kind in (Kind.FORWARD, Kind.EVAL):
            self.checks[kind] = lambda msg: batch_fault(msg, sizes[k - 1], sizes[-1])
        # --feed stage: stage 1 holds the training set; the coordinator names a training batch's examples.
        self.shard = Shard(self.cfg.shard) if self.stage.first and self.cfg.feed == "stage" else None
        if self.shard is not None:
            self.checks[Kind.FORWARD] = self.shard.fault
        self.checks[Kind.GRAD] = self.grad_fault
        # Per-link credit: the batches sent on that the next stage has not answered yet. A target for b
        # says it has taken b (it sends it when it processes b); with credit "taken", so does a CREDIT,
        # sent as it takes b, so that BP(lambda > 0), whose target waits on every stage above, does not
        # make each link wait on the whole pipeline's round trip.
        self.link = self.cfg.credit != "coordinator"
        self.unanswered: set[int] = set()
        self.credits_below = self.cfg.credit == "taken" and not self.stage.first
        if self.cfg.credit == "taken":
            self.take((Kind.CREDIT,), self.names["next"])
            self.checks[Kind.CREDIT] = lambda msg: None if msg.id in self.unanswered else "a credit for no batch sent"

    def held(self) -> bool:
        """Locked and awaiting the gradient, or `window` batches sent on that no target has answered:
        a batch is taken (forward, update) only when it can be sent on, so the wait spreads upstream."""
        return self.blocked or (self.link and len(self.unanswered) >= self.cfg.window)

    def prepared(self) -> bool:
        if self.shard is None or not self.shard.loaded():
            return self.shard is None
        if self.shard.error is not None:
            raise RoleFailed(self.shard.error)
        return True

    def unpacked(self, msg: Message) -> Message:
        return self.shard.take(msg) if self.shard is not None and msg.kind is Kind.FORWARD else msg

    def grad_fault(self, msg: Message) -> str | None:
        batch = self.stage.inflight.batches.get(msg.id)
        if batch is None:
            return NOT_IN_FLIGHT   # late (evicted), or never sent
        return grad_fault(msg.arrays["g"], batch.h)

    def on_forward(self, msg: Message, t: float) -> None:
        b, y = msg.id, msg.arrays["y"]
        if self.link and self.stage.first:
            self.to_coordinator(Kind.TAKEN, b)   # the coordinator's credit, at once: it may feed the next
        if self.credits_below:
            self.to_peer("prev", Kind.CREDIT, b)   # the link's credit, at once: the stage below may send the next

        def send_on(h):   # downstream starts at once
            self.to_peer("next", Kind.FORWARD, b, x=h, y=y)
            if self.link:
                self.unanswered.add(b)

        _, target_below, batch = train_step(self.stage, b, msg.arrays["x"], y, t, send_on)
        if batch is None:
            self.blocked = True  # locked backprop: nothing more until the true gradient comes
            return
        # Decoupled: the update used the local synthetic gradient and waited for no one.
        self.stamp(batch)
        if target_below is not None:
            self.to_peer("prev", Kind.GRAD, b, g=target_below)

    def on_grad(self, msg: Message, t: float) -> None:
        b, g = msg.id, msg.arrays["g"]   # b is in flight: grad_fault saw to it
        self.unanswered.discard(b)
        if self.stage.locked:
            target_below, batch = self.stage.update(b, g)
            self.stamp(batch)
            if target_below is not None:
                self.to_peer("prev", Kind.GRAD, b, g=target_below)
            self.blocked = False
            self.record(update_record(b, batch))
        else:
            self.clock.lap("compute")
            fit, target_below = self.stage.learn(b, g)    # g is the target for M(h_b)
            self.clock.lap("synth")
            if target_below is not None:   # BP(lambda) > 0: the stage below's target, only now
                self.to_peer("prev", Kind.GRAD, b, g=target_below)
            self.record(fit and update_record(b, fit.batch, fit))

    def on_credit(self, msg: Message, t: float) -> None:
        self.unanswered.discard(msg.id)   # (the target for it comes when it comes)

    def on_eval(self, msg: Message, t: float) -> None:
        self.to_peer("next", Kind.EVAL, msg.id, x=self.stage.forward(msg.arrays["x"]), y=msg.arrays["y"])

    def on_sync(self, msg: Message, t: float) -> None:
        self.flush_metrics()
        self.to_peer("next", Kind.SYNC, msg.id)

    def on_sync_back(self, msg: Message, t: float) -> None:
        if self.stage.first:
            self.to_coordinator(Kind.SYNCED, msg.id)
        else:
            self.to_peer("prev", Kind.SYNC_BACK, msg.id)

    def numerics(self):
        return self.stage

    def tallies(self) -> dict:
        return {"updates": self.stage.updates, "held_peak": self.stage.inflight.held_peak}
