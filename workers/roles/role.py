"""What every worker role shares: the event loop over inbox and control socket, heartbeats, metrics."""
from __future__ import annotations

import logging
import time
from collections import deque

import zmq

from protocol import Kind, Message, ProtocolError
from protocol.liveness import Liveness
from protocol.sockets import make_socket, recv, send
from protocol.wireconfig import WireConfig
from workers.numerics.inflight import Batch, Fit
from workers.numerics.snapshot import Stateful, restore
from workers.runtime.clock import Clock

# Kinds that travel the forward direction; a locked (backprop) stage defers them while it
# waits for its gradient, so the barrier and evaluation keep their place in the stream.
FORWARD_KINDS = frozenset({Kind.FORWARD, Kind.EVAL, Kind.SYNC})


class CoordinatorLost(RuntimeError):
    pass


def update_record(b: int, batch: Batch, fit: Fit | None = None, param_staleness: bool = False) -> dict:
    """Batch b's metrics record once done with: its update latency and, when M was fitted to its target, how M did."""
    rec = {"step": b, "latency_ms": batch.latency * 1e3}
    if param_staleness:
        rec["param_staleness"] = batch.param_staleness
    if fit is not None:
        rec.update(synth_loss=fit.synth_loss, cos=fit.cos, staleness=fit.staleness)
    return rec


class Role:
    """Base of the worker loops: subclasses fill `self.handlers` (kind -> method), dask-style."""

    def __init__(self, ctx: zmq.Context, control: zmq.Socket, inbox: zmq.Socket, assign: Message, curve=None):
        meta = assign.meta
        self.name = f"stage-{meta['stage']}"
        self.stage_index = meta["stage"]
        self.cfg = WireConfig.from_meta(meta["config"])
        self.log = logging.getLogger(f"dni.{self.name}")
        self.ctx, self.control, self.inbox = ctx, control, inbox
        self.liveness = Liveness(meta["heartbeat"])
        self.peers = {side: self._connect(ctx, peer, curve) for side, peer in meta["neighbours"].items() if peer}
        self.handlers: dict[Kind, callable] = {Kind.STOP: self.on_stop, Kind.SAVE: self.on_save,
                                               Kind.RESET: self.on_reset, Kind.HEARTBEAT: lambda msg, t: None}
        self.deferred: deque[Message] = deque()
        self.blocked = False        # a locked stage waiting for its gradient
        self.training = False       # a training batch is in flight (see workers/runtime/clock.py)
        self.clock = Clock()
        self.stopping = False
        self.reset = False          # told to drop this role and rejoin (a stage was lost and replaced)
        self.records: list[dict] = []
        self.counters = {"bad_messages": 0, "duplicates": 0, "unexpected": 0}
        self.last_id: dict[tuple[str, str], int] = {}

    @staticmethod
    def _connect(ctx, peer: dict, curve) -> zmq.Socket:
        sock = make_socket(ctx, zmq.PUSH, {"client": (*curve["own"], peer["key"].encode())} if curve else None)
        sock.connect(peer["endpoint"])
        return sock

    # -- sending ------------------------------------------------------------------------
    # A send ends the handler's compute so far; the clock charges the send itself apart.
    def to_peer(self, side: str, kind: Kind, b: int, meta: dict | None = None, **arrays) -> None:
        self.clock.lap("compute")
        send(self.peers[side], Message(kind, self.name, b, meta or {}, arrays))
        self.clock.lap("send")

    def to_coordinator(self, kind: Kind, b: int = -1, meta=None, arrays=None) -> None:
        self.clock.lap("compute")
        send(self.control, Message(kind, self.name, b, meta or {}, arrays or {}))
        self.clock.lap("send")
        self.liveness.on_spoke()

    @staticmethod
    def stamp(batch: Batch) -> Batch:
        """Batch b's update is made: its update latency runs from its input's arrival until now."""
        batch.latency = time.perf_counter() - batch.t_received
        return batch

    def record(self, rec: dict | None) -> None:
        if rec is None:
            return
        self.records.append(rec)
        if len(self.records) >= self.cfg.log_every:
            self.flush_metrics()

    def flush_metrics(self) -> None:
        if self.records:
            self.to_coordinator(Kind.METRICS, meta={"records": self.records})
            self.records = []

    # -- the loop ------------------------------------------------------------------------
    def run(self) -> None:
        self.to_coordinator(Kind.READY)
        poller = zmq.Poller()
        poller.register(self.inbox, zmq.POLLIN)
        poller.register(self.control, zmq.POLLIN)
        timeout_ms = int(self.liveness.interval * 1000)
        while not self.stopping:
            if self.deferred and not self.blocked:
                # A deferred input counts as received when the stage takes it up: update
                # latency measures the stage's own work and waits, not its backlog.
                self.dispatch(self.deferred.popleft(), self.clock.lap("other"))
                continue
            # Block in poll (never busy-poll: on 2 cores it starves ZeroMQ's I/O thread).
            start = self.clock.lap("other")
            events = poller.poll(timeout_ms)
            end = self.clock.lap("wait" if self.blocked or self.training else "idle")
            if self.blocked:
                self.clock.blocked += end - start
            for sock, _ in events:
                self.receive(sock)
            self.clock.lap("other")
            if self.liveness.should_speak():
                self.to_coordinator(Kind.HEARTBEAT)
            if self.liveness.dead():
                raise CoordinatorLost(f"no word from the coordinator for {self.liveness.silent_for():.1f} s")

    def receive(self, sock: zmq.Socket) -> None:
        try:
            _, msg = recv(sock)
        except ProtocolError as exc:
            # The "nasty" parser: reject, count, log (a few), never crash.
            self.counters["bad_messages"] += 1
            if self.counters["bad_messages"] <= 5:
                self.log.warning("dropped a malformed message: %s", exc)
            return
        t = self.clock.lap("receive")
        if sock is self.control:
            self.liveness.on_heard()
        elif self.is_duplicate(msg):
            return
        if self.blocked and msg.kind in FORWARD_KINDS:
            self.deferred.append(msg)
        else:
            self.dispatch(msg, t)

    def is_duplicate(self, msg: Message) -> bool:
        """Data ids rise per (source, kind); a repeat or older id is a duplicate and is dropped."""
        key = (msg.src, msg.kind)
        if msg.id <= self.last_id.get(key, -1):
            self.counters["duplicates"] += 1
            return True
        self.last_id[key] = msg.id
        return False

    def dispatch(self, msg: Message, t: float) -> None:
        handler = self.handlers.get(msg.kind)
        if handler is None:
            self.counters["unexpected"] += 1
            self.log.warning("unexpected %s message from %s", msg.kind, msg.src or "?")
            return
        if msg.kind is Kind.FORWARD:
            self.training = True
        elif msg.kind is Kind.SYNC:
            self.training = False   # the barrier: every training batch before it is through
        handler(msg, t)
        self.clock.lap("compute")

    # -- control -------------------------------------------------------------------------
    def numerics(self) -> Stateful:
        """The stage, time box or store whose full state a checkpoint holds."""
        raise NotImplementedError

    def state(self) -> dict:
        return self.numerics().state()

    def load_state(self, saved: dict) -> None:
        """Start from a checkpoint's state (sent with the assignment), before anything else arrives."""
        restore(self.numerics(), saved, self.name)

    def on_save(self, msg: Message, t: float) -> None:
        self.to_coordinator(Kind.STATE, msg.id, meta=self.counters, arrays=self.state())

    def on_stop(self, msg: Message, t: float) -> None:
        self.flush_metrics()
        self.to_coordinator(Kind.BYE, meta={**self.counters, "time_s": self.clock.report()})
        self.stopping = True

    def on_reset(self, msg: Message, t: float) -> None:
        # Nothing more is sent: what this role holds is newer than the checkpoint every stage
        # restarts from, and its metrics records of those batches will be made again.
        self.stopping = self.reset = True

    def close(self) -> None:
        for sock in self.peers.values():
            sock.close(linger=0)
