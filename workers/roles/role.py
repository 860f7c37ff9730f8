"""What every worker role shares: the event loop over inbox and control socket, heartbeats, metrics."""
from __future__ import annotations

import logging
import time
from collections import defaultdict, deque

import zmq

from protocol import Kind, Message, ProtocolError, window
from protocol.drops import Drops, quote
from protocol.liveness import Liveness
from protocol.roles import worker_name
from protocol.sockets import make_socket, recv, send
from protocol.wireconfig import WireConfig
from workers.numerics.inflight import Batch, Fit
from workers.numerics.optimizers import NonFinite, finite
from workers.numerics.snapshot import Stateful, restore
from workers.roles.guard import NOT_IN_FLIGHT, Window
from workers.runtime.clock import Clock
from workers.runtime.memory import peak_rss_mb, status_mb

# Kinds that travel the forward direction; a held stage (locked backprop waiting for its
# gradient, or a link out of credit) defers them, so the barrier and evaluation keep their place.
FORWARD_KINDS = frozenset({Kind.FORWARD, Kind.EVAL, Kind.SYNC})
PREPARING_POLL_MS = 50   # how often a role still preparing (see `prepared`) looks whether it is done


class CoordinatorLost(RuntimeError):
    pass


class RoleFailed(RuntimeError):
    """The role cannot go on; the message says why in one line (the worker tells the coordinator and exits)."""


class Diverged(RoleFailed):
    """A non-finite loss or gradient, caught before it changed the model: the run must stop."""


def update_record(b: int, batch: Batch | None = None, fit: Fit | None = None, param_staleness: bool = False) -> dict:
    """Batch b's metrics record once done with: its update latency and wall-clock time (or that --p-update skipped
    it) and, when M was fitted to its target, how M did (batch None: the fit's record alone)."""
    rec = {"step": b}
    if batch is not None:
        made = {"time": batch.updated_at, "latency_ms": batch.latency * 1e3}
        rec.update({"skipped": True} if batch.skipped else made)
    if param_staleness:
        rec["param_staleness"] = batch.param_staleness
    if fit is not None:
        rec.update(synth_loss=fit.synth_loss, cos=fit.cos, staleness=fit.staleness)
    return rec


class Role:
    """Base of the worker loops: subclasses fill `self.handlers` (kind -> method), dask-style."""

    def __init__(self, ctx: zmq.Context, control: zmq.Socket, inbox: zmq.Socket, assign: Message, curve=None):
        self.start_rss_mb = status_mb("VmRSS")   # the process's baseline: interpreter, libraries, sockets; no stage yet
        meta = assign.meta
        self.name = worker_name(meta["role"], meta["stage"])
        self.stage_index = meta["stage"]
        self.cfg = WireConfig.from_meta(meta["config"])
        self.log = logging.getLogger(f"dni.{self.name}")
        self.ctx, self.control, self.inbox = ctx, control, inbox
        self.liveness = Liveness(meta["heartbeat"])
        neighbours = {side: peer for side, peer in meta["neighbours"].items() if peer}
        if not all(isinstance(p, dict) and isinstance(p.get("name"), str) for p in neighbours.values()):
            raise ProtocolError("the assignment's neighbours lack their names")
        self.names = {side: peer["name"] for side, peer in neighbours.items()}
        # With CURVE, who may claim a name: the key each sender's connection proved (ZAP's User-Id).
        self.keys = None if not curve else {**{p["name"]: p.get("key") for p in neighbours.values()},
                                            "coordinator": curve["client"][2].decode()}
        self.peers = {side: self._connect(ctx, peer, curve) for side, peer in neighbours.items()}
        self.handlers: dict[Kind, callable] = {Kind.STOP: self.on_stop, Kind.SAVE: self.on_save,
                                               Kind.RESET: self.on_reset, Kind.HEARTBEAT: lambda msg, t: None}
        self.control_kinds = frozenset(self.handlers)   # all a worker takes on its control socket
        # Filled by each role: the data kinds it takes, from which senders, and what else it checks.
        self.sources: dict[Kind, frozenset[str]] = {}
        self.checks: dict[Kind, callable] = {}          # kind -> fault(msg): a reason to drop, or None
        self.window = Window(window.id_span(self.cfg.cache), meta.get("start", 0), meta.get("eval_start", 0))
        self.drops = Drops(self.log)
        self.seen: dict[str, int] = {}                  # data kind -> how far its stream came: in heartbeats
        self.deferred: deque[Message] = deque()
        self.blocked = False        # a locked stage waiting for its gradient
        self.training = False       # a training batch is in flight (see workers/runtime/clock.py)
        self.clock = Clock()
        self.reported = time.monotonic()   # the last heartbeat
        self.stopping = False
        self.reset = False          # told to drop this role and rejoin (a stage was lost and replaced)
        self.records: list[dict] = []
        self.counters = {"bad_messages": 0, "unexpected": 0}
        self.bytes_sent: defaultdict[str, int] = defaultdict(int)   # by peer side, training messages only

    def upstream(self) -> str:
        """Who sends this worker its inputs: the previous worker, or the coordinator if none."""
        return self.names.get("prev", "coordinator")

    def take(self, kinds, *senders: str) -> None:
        for kind in kinds:
            self.sources[kind] = self.sources.get(kind, frozenset()) | frozenset(senders)

    @staticmethod
    def _connect(ctx, peer: dict, curve) -> zmq.Socket:
        sock = make_socket(ctx, zmq.PUSH, {"client": (*curve["own"], peer["key"].encode())} if curve else None)
        sock.connect(peer["endpoint"])
        return sock

    # -- sending ------------------------------------------------------------------------
    # A send ends the handler's compute so far; the clock charges the send itself apart.
    def to_peer(self, side: str, kind: Kind, b: int, meta: dict | None = None, **arrays) -> None:
        # Divergence can show first in what a stage sends (an output past float32's range, a target
        # through huge weights) while its own update is still finite. The receiver would drop it as
        # forged and the run would stall: the sender says so instead (one BLAS pass an array).
        for name, a in arrays.items():
            if a.dtype.kind == "f" and not finite(a):
                raise NonFinite(f"the {name!r} of the {kind} it sends is not finite")
        self.clock.lap("compute")
        send(self.peers[side], Message(kind, self.name, b, meta or {}, arrays))
        self.clock.lap("send")
        if kind is not Kind.EVAL:   # what training costs a link (`dni bench race`): the arrays, headers aside
            self.bytes_sent[side] += sum(a.nbytes for a in arrays.values())

    def to_coordinator(self, kind: Kind, b: int = -1, meta=None, arrays=None) -> None:
        self.clock.lap("compute")
        send(self.control, Message(kind, self.name, b, meta or {}, arrays or {}))
        self.clock.lap("send")
        self.liveness.on_spoke()

    @staticmethod
    def stamp(batch: Batch) -> Batch:
        """Batch b's update is made: its update latency runs from its input's arrival until now."""
        batch.latency = time.perf_counter() - batch.t_received
        batch.updated_at = time.time()   # the wall clock, which the processes of one host share
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
        poller = zmq.Poller()
        poller.register(self.inbox, zmq.POLLIN)
        poller.register(self.control, zmq.POLLIN)
        timeout_ms = int(self.liveness.interval * 1000)
        ready = False
        while not self.stopping:
            if not ready and (ready := self.prepared()):   # READY once prepared; heartbeats meanwhile
                self.to_coordinator(Kind.READY)
            if self.deferred and not self.held():
                # A deferred input counts as received when the stage takes it up: update
                # latency measures the stage's own work and waits, not its backlog.
                self.dispatch(self.deferred.popleft(), self.clock.lap("other"))
                continue
            # Block in poll (never busy-poll: on 2 cores it starves ZeroMQ's I/O thread).
            start = self.clock.lap("other")
            events = poller.poll(timeout_ms if ready else PREPARING_POLL_MS)
            end = self.clock.lap("wait" if self.held() or self.training else "idle")
            if self.blocked:
                self.clock.blocked += end - start
            if self.held():
                self.clock.held += end - start
            for sock, _ in events:
                self.receive(sock)
            self.clock.lap("other")
            if time.monotonic() - self.reported >= self.liveness.interval:
                # Every interval, even to a coordinator it talks to anyway (DONE, METRICS), with its progress
                # (if the pipeline stalls, the coordinator can say where) and its load (for `dni top`).
                self.reported = time.monotonic()
                self.to_coordinator(Kind.HEARTBEAT, meta={"seen": self.seen, "load": self.load()})
            if self.liveness.dead():
                raise CoordinatorLost(f"no word from the coordinator for {self.liveness.silent_for():.1f} s")

    def load(self) -> dict:
        """The heartbeat's running totals of this worker (protocol/liveness.py LOAD)."""
        c = self.clock
        return {"cpu": time.process_time(), "poll": c.seconds["wait"] + c.seconds["idle"], "held": c.held,
                "blocked": c.blocked, "dropped": sum(self.drops.counts.values())}

    def receive(self, sock: zmq.Socket) -> None:
        try:
            _, msg = recv(sock, keyed=self.keys is not None and sock is self.inbox)
        except ProtocolError as exc:
            # The "nasty" parser: reject, count, log (rate-limited), never crash.
            self.counters["bad_messages"] += 1
            self.drops("malformed", str(exc))
            return
        t = self.clock.lap("receive")
        if sock is self.control:
            self.liveness.on_heard()
            if msg.kind not in self.control_kinds:
                return self.drops("not a kind the control socket carries", msg.kind)
        elif (why := self.fault(msg)) is not None:
            return self.drops(why, f"{msg.kind} from {quote(msg.src)} id {msg.id}")
        if self.held() and msg.kind in FORWARD_KINDS:
            if len(self.deferred) >= window.backlog(self.cfg.cache):
                return self.drops("backlog full", msg.kind)
            self.deferred.append(msg)
        else:
            self.dispatch(msg, t)

    def prepared(self) -> bool:
        """Whether the role may say READY: what it prepares beside the loop is done (RoleFailed if it failed)."""
        return True

    def unpacked(self, msg: Message) -> Message:
        """A data message, as its handler takes it (stage 1 under --feed stage: a batch's rows for its indices)."""
        return msg

    def held(self) -> bool:
        """Whether input in the forward direction must wait in `deferred`: a locked stage awaits its gradient."""
        return self.blocked

    def fault(self, msg: Message) -> str | None:
        """Why a data message is none this worker could have been sent (None: take it)."""
        senders = self.sources.get(msg.kind)
        if senders is None:
            return "not a kind this worker takes on its data socket"
        if msg.src not in senders:
            return "sender not one this worker takes it from"
        if self.keys is not None and msg.peer != self.keys.get(msg.src):
            return "sender's key is not that of the name it claims"
        if not self.window.admits(msg.src, msg.kind, msg.id):
            return "id outside the window"
        check = self.checks.get(msg.kind)
        why = check(msg) if check is not None else None
        # Contents no real sender sends (shapes, labels, values) do not move the stream: else forged
        # ids in order, each with any contents, would walk it away. A late gradient (its batch evicted)
        # is real all the same, and must not hold the stream back.
        if why is None or why == NOT_IN_FLIGHT:
            top = self.window.took(msg.src, msg.kind, msg.id)
            self.seen[msg.kind] = max(top, self.seen.get(msg.kind, top))
        return why

    def dispatch(self, msg: Message, t: float) -> None:
        handler = self.handlers.get(msg.kind)
        if handler is None:
            self.counters["unexpected"] += 1
            return self.drops("unexpected", msg.kind)
        if msg.kind is Kind.FORWARD:
            self.training = True
        elif msg.kind is Kind.SYNC:
            self.training = False   # the barrier: every training batch before it is through
        try:
            handler(self.unpacked(msg), t)
        except NonFinite as exc:
            raise Diverged(f"{exc} at step {msg.id}: training diverged (a lower --lr may help)") from None
        except ProtocolError as exc:   # what only the handler can tell: it does not fit the state
            self.drops("does not fit what it joins", str(exc))
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

    def goodbye(self, error: str | None = None) -> dict:
        """BYE's meta: counters, drops by reason, the time breakdown, bytes sent, peak memory (and the memory it
        started with), and why it gives up."""
        meta = {**self.counters, "dropped": dict(self.drops.counts), "time_s": self.clock.report(),
                "bytes_sent": dict(self.bytes_sent), "peak_rss_mb": peak_rss_mb(),
                "start_rss_mb": self.start_rss_mb, **self.tallies()}
        return meta if error is None else {**meta, "error": error}

    def tallies(self) -> dict:
        """What a role adds to its goodbye (summary.json's `workers`): a stage, the updates it made."""
        return {}

    def on_stop(self, msg: Message, t: float) -> None:
        self.flush_metrics()
        self.to_coordinator(Kind.BYE, meta=self.goodbye())
        self.stopping = True

    def on_reset(self, msg: Message, t: float) -> None:
        # Nothing more is sent: what this role holds is newer than the checkpoint every stage
        # restarts from, and its metrics records of those batches will be made again.
        self.stopping = self.reset = True

    def close(self) -> None:
        for sock in self.peers.values():
            sock.close(linger=0)
