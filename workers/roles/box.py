"""The time-box role: join the coordinator's slice with the previous box's state, unroll, update at once.

Box j of K gets its slice of the input sequence straight from the coordinator and the boundary
state (with the labels and the running loss) from box j-1, matched by batch id. With tied
weights it pushes its gradients to the parameter service instead of stepping itself, and the
push asks for the weights of its next unroll: the answer, fresh weights when its copy has
fallen behind, comes while the box works on. It starts an unroll at once on the copy it holds
while that is within --max-staleness updates as far as it knows (workers/roles/tiedcopy.py),
and waits, as a locked stage waits for its gradient, only beyond the bound and where exact
weights are needed: its first unroll, the first after a barrier, evaluations, and backprop.
"""
from __future__ import annotations

import numpy as np

from protocol import Kind, Message, ProtocolError, window
from workers.numerics.inflight import Batch
from workers.numerics.optimizers import check_loss
from workers.numerics.timebox import TimeBox, train_step, update_step
from workers.roles.boxguard import BoxGuard
from workers.roles.role import Role, update_record
from workers.roles.tiedcopy import TiedCopy


class TimeBoxWorker(Role):
    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.box = TimeBox(self.stage_index, self.cfg)
        self.locked = self.box.locked
        # Every mode but truncated BPTT sends the gradient for its incoming state back (box 1: under --stream, in
        # dni and cdni, to the last box, whose state it went on from).
        self.sends_back = self.box.feeds_back and self.box.mode != "truncated"
        self.slices: dict[tuple, Message] = {}   # (kind, b) -> the coordinator's slice, awaiting the state
        self.states: dict[tuple, Message] = {}   # (kind, b) -> box j-1's state, awaiting the slice
        self.held_sync: Message | None = None
        self.job: tuple | None = None            # a joined input waiting for weights from the service
        self.copy = TiedCopy(self.cfg.max_staleness)
        self.pulls = 0
        if self.box.first and self.cfg.stream:
            self.counters["carried"] = 0   # training batches that went on from the last box's state (--stream)
        self.read = 0       # the staleness of the copy the latest unroll read, as the box knew it: its pushes say it
        self.trained = 0    # training batches finished: in backprop, the service version the next one needs
        self.latest = 0     # the last of them: the id a shared M's fits go under at a barrier
        self.handlers.update({Kind.FORWARD: self.on_input, Kind.EVAL: self.on_input, Kind.GRAD: self.on_grad,
                              Kind.PARAMS: self.on_params, Kind.SYNC: self.on_sync,
                              Kind.SYNC_BACK: self.on_sync_back})
        inputs = ("coordinator", self.names["prev"]) if "prev" in self.names else ("coordinator",)
        self.take((Kind.FORWARD, Kind.EVAL), *inputs)
        self.take((Kind.SYNC,), self.upstream())
        if "next" in self.names:
            self.take((Kind.GRAD, Kind.SYNC_BACK), self.names["next"])
        if self.cfg.stream and self.box.first:   # the last box's states, for the batches --window later
            self.take((Kind.FORWARD,), self.names["carry"])
        if self.cfg.stream and self.box.last:    # box 1's targets for them
            self.take((Kind.GRAD,), self.names["carry"])
        if "params" in self.names:
            self.take((Kind.PARAMS,), self.names["params"])
        guard = BoxGuard(self.cfg, self.box)
        self.checks.update({Kind.FORWARD: guard.input_fault, Kind.EVAL: guard.input_fault,
                            Kind.PARAMS: guard.params_fault, Kind.GRAD: guard.target_fault})

    def dispatch(self, msg: Message, t: float) -> None:
        super().dispatch(msg, t)
        self.release_sync()

    # -- inputs: join, fetch weights, unroll ------------------------------------------------
    def on_input(self, msg: Message, t: float) -> None:
        carried = self.box.first and msg.src != "coordinator"   # --stream: for the batch --window later
        key = (msg.kind, msg.id + self.cfg.window if carried else msg.id)
        waiting = self.slices if msg.src == "coordinator" else self.states
        waiting[key] = msg
        # A half that never meets its other half (lost, or forged) is forgotten a horizon later.
        window.prune(waiting, key[1], window.horizon(self.cfg.cache), id_of=lambda key: key[1])
        if key in self.slices and (key in self.states or not self.joins(*key)):
            self.begin(msg.kind, key[1], self.slices.pop(key), self.states.pop(key, None), t)

    def joins(self, kind: Kind, b: int) -> bool:
        """Whether the input of batch b waits for a state: box 1's only under --stream, from the batch --window
        before, which the last box trained since the start (a resumed or restarted run starts from the zero state)."""
        return not self.box.first or (self.cfg.stream and kind is Kind.FORWARD
                                      and b >= self.window.start + self.cfg.window)

    def begin(self, kind: Kind, b: int, part: Message, state: Message | None, t: float) -> None:
        x = part.arrays["x"]
        if state is not None and x.shape[1] != len(state.arrays["h"]):
            raise ProtocolError(f"batch {b}: a slice of {x.shape[1]} sequences for a state of {len(state.arrays['h'])}")
        if self.box.first:   # the labels come with the data; the state is zero, or under --stream carried on
            if state is not None:
                self.counters["carried"] += 1
            y = part.arrays["y"]
            job = (kind, b, x, self.box.cell.zero_state(len(y)) if state is None else state.arrays["h"], y,
                   np.zeros(3), t)
        else:
            job = (kind, b, x, state.arrays["h"], state.arrays["y"], state.arrays["stats"], t)
        if not self.box.tied:
            return self.unroll(*job, 0)
        self.job, self.blocked = job, True
        self.proceed()

    def proceed(self) -> None:
        """Start the waiting unroll if the copy will do; else see that an answer is on its way."""
        if self.copy.ready(self.box.version, fresh=self.locked or self.job[0] is Kind.EVAL):
            if not self.copy.in_hand and not self.copy.outstanding():
                self.pull()   # nothing heard since the last unroll (it pushed nothing): ask, and go on
            return self.start()
        if not self.copy.outstanding():
            self.pull()

    def request(self, kind: Kind) -> dict:
        """What an unroll of this kind needs: backprop's training, the weights after every earlier batch (and
        this one's, asked with its push); evaluation, the newest. A push asks for weights that much fresher
        than the bound as the other boxes will land updates, a push each, before this box's next unroll."""
        need = self.trained + (kind is Kind.PUSH) if self.locked and kind is not Kind.EVAL else 0
        bound = 0 if kind is Kind.EVAL or self.locked else self.cfg.max_staleness
        if kind is Kind.PUSH:
            bound = max(bound - (self.cfg.boxes - 1), 0)
        return {"need": need, "bound": bound}

    def ask(self, kind: Kind, b: int, have: int, **grads) -> None:
        job_kind = self.job[0] if kind is Kind.PULL else Kind.PUSH
        meta = {"have": have} if kind is Kind.PULL else {"version": have, "read": self.read}
        ask = self.copy.ask(kind is Kind.PUSH)
        self.to_peer("params", kind, b, meta={**meta, **self.request(job_kind), "ask": ask}, **grads)

    def on_params(self, msg: Message, t: float) -> None:
        version, staleness = msg.meta["version"], msg.meta["staleness"]   # counts, checked at decode
        if not self.copy.expects(msg.id):
            self.counters["unexpected"] += 1
            return
        if msg.arrays:
            self.box.load(msg.arrays, version)
        self.copy.answer(msg.id, version, staleness)
        if self.job is not None:
            self.proceed()

    def pull(self) -> None:
        self.pulls += 1
        self.ask(Kind.PULL, self.pulls, have=self.box.version)

    def start(self) -> None:
        job, self.job, self.blocked = self.job, None, False
        self.read = self.copy.lag(self.box.version)
        self.copy.started()
        self.unroll(*job, self.read)

    def unroll(self, kind: Kind, b: int, xs, state0, y, stats, t: float, staleness: int) -> None:
        if kind is Kind.EVAL:
            h, stats = self.box.forward(xs, state0, y, stats)
            if self.box.last:
                self.to_coordinator(Kind.EVALUATED, b, {"loss_sum": float(stats[0]), "correct": int(stats[1]),
                                                         "n": int(stats[2])})
            else:
                self.to_peer("next", Kind.EVAL, b, h=h, y=y, stats=stats)
            return

        def send_on(h, stats):   # the next box starts at once; under --stream the last box's state goes to box 1
            self.to_peer("carry" if self.box.last else "next", Kind.FORWARD, b, h=h, y=y, stats=stats)

        _, stats, _, batch = train_step(self.box, b, xs, state0, y, stats, t, staleness,
                                        None if self.box.last and not self.cfg.stream else send_on, *self.senders(b))
        if batch is None:
            self.blocked = True   # backprop: nothing more until the true gradient comes back
            return
        # Decoupled: seeded with M(h_end) (truncated: with nothing), updated now, waited for no one.
        rec = self.finished(b, batch)
        if self.box.last:
            correct, n = int(stats[1]), int(stats[2])
            loss = check_loss(float(stats[0]) / max(n, 1))
            self.to_coordinator(Kind.DONE, b, {"loss": loss, "correct": correct, "n": n})
            rec = {**(rec or {}), "loss": loss, "accuracy": correct / max(n, 1)}
        self.record(rec)

    def senders(self, b: int) -> tuple:
        """How batch b's update step sends: the target back to box j-1, the gradients to the service."""
        def send_back(g):
            self.send_back(b, g, self.box.inflight.batches.get(b))

        def push(grads):
            self.ask(Kind.PUSH, b, self.box.version, **grads)

        return send_back if self.sends_back else None, push if self.box.tied else None

    def send_back(self, b: int, g: np.ndarray, batch: Batch | None) -> None:
        """Batch b's target to the box before, for the batch its state came from (box 1: the last box's, a
        --window before, if b went on from one)."""
        if not self.box.first:
            self.to_peer("prev", Kind.GRAD, b, g=g, **self.ahead(batch))
        elif self.joins(Kind.FORWARD, b):
            self.to_peer("carry", Kind.GRAD, b - self.cfg.window, g=g, **self.ahead(batch))

    def ahead(self, batch: Batch | None) -> dict[str, np.ndarray]:
        """What box j-1's DNI + Aux predicts, sent with its target: this box's synthetic gradient of the batch."""
        return {"a": batch.g_hat} if self.cfg.aux and batch is not None and batch.g_hat is not None else {}

    def finished(self, b: int, batch: Batch) -> dict | None:
        """b's update is made: its record now, unless M_j is still to be fitted to b's target."""
        self.trained += 1
        self.latest = b
        self.stamp(batch)
        return None if self.box.inflight.learns else update_record(b, batch, param_staleness=self.box.tied)

    # -- gradients back from box j+1 ------------------------------------------------------
    def on_grad(self, msg: Message, t: float) -> None:
        b, g = msg.id, msg.arrays["g"]   # b is in flight: grad_fault saw to it
        if self.locked:
            _, batch = update_step(self.box, b, g, *self.senders(b))   # the true gradient: BPTT across boxes
            rec = self.finished(b, batch)
            self.blocked = False
        else:
            # M_j(h_end of b) fitted (--aux: P too); BP(lambda > 0): box j-1's target now
            fit, below = self.box.learn(b, g, msg.arrays.get("a"))
            if below is not None:
                self.send_back(b, below, fit.batch)
            rec = fit and update_record(b, fit.batch, fit, param_staleness=self.box.tied)
        self.record(rec)

    # -- the barrier ----------------------------------------------------------------------
    def on_sync(self, msg: Message, t: float) -> None:
        self.held_sync = msg
        self.release_sync()

    def release_sync(self) -> None:
        # Pass the barrier on only when every state that came before it has met its slice and
        # been handled: the coordinator's slices travel on other sockets than the barrier. Box 1's waiting
        # states (--stream) are for batches not fed yet; its slices, fed before the barrier, wait for them.
        if self.held_sync is None or (self.slices if self.box.first else self.states) or self.blocked:
            return
        token, self.held_sync = self.held_sync.id, None
        self.flush_metrics()
        if self.box.last:
            self.turn_back(token)
        else:
            self.to_peer("next", Kind.SYNC, token)

    def on_sync_back(self, msg: Message, t: float) -> None:
        self.turn_back(msg.id)

    def turn_back(self, token: int) -> None:
        if self.box.tied:
            pending = self.box.take_pending()
            if pending:   # a shared M's last fits, DNI + Aux's: in the service before the barrier ends
                self.senders(self.latest)[1](pending)
            self.copy.barrier()
            # Behind this box's pushes on the same socket: the service answers the coordinator
            # once all K boxes' markers are in, so every update is applied when the barrier ends.
            self.to_peer("params", Kind.SYNC, token)
        if not self.box.first:
            self.to_peer("prev", Kind.SYNC_BACK, token)
        elif not self.box.tied:
            self.to_coordinator(Kind.SYNCED, token)

    def on_stop(self, msg: Message, t: float) -> None:
        self.counters.update(evicted=self.box.inflight.evicted, pulls=self.pulls)
        super().on_stop(msg, t)

    def numerics(self):
        return self.box

    def load_state(self, saved: dict) -> None:
        super().load_state(saved)
        self.trained = self.box.inflight.updates   # every batch so far made one update here
