"""The control plane: registers workers, assigns stages, feeds batches under credit, watches liveness."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import numpy as np
import zmq

from protocol import Kind, Message, ProtocolError, VersionMismatch, decode, liveness
from protocol.auth import Gate
from protocol.liveness import Liveness
from protocol.sockets import make_socket, send
from workers.roles.role import title

log = logging.getLogger("dni.coordinator")


class WorkerLost(RuntimeError):
    """A worker died or went silent; the message names its stage and host."""


@dataclass
class Member:
    identity: bytes
    stage: int
    hello: dict
    liveness: Liveness
    ready: bool = False
    bye: dict | None = None
    proc: object = None          # the local Popen, when this process launched it
    role: str | None = None      # once assigned

    def describe(self) -> str:
        # Hostnames repeat (containers, namespaces); the address the worker advertised does not.
        endpoint = str(self.hello.get("endpoint", ""))
        address = f"{urlsplit(endpoint).hostname}, " if endpoint.startswith("tcp://") else ""
        host, pid = self.hello.get("host", "?"), self.hello.get("pid", "?")
        return f"{title(self.role, self.stage)} on {host} ({address}pid {pid})"


@dataclass
class Results:
    """What the head reports back, accumulated between resets."""
    batches: int = 0
    samples: int = 0
    loss_sum: float = 0.0
    correct: int = 0
    states: dict = field(default_factory=dict)
    synced: set = field(default_factory=set)


class Coordinator:
    def __init__(self, ctx: zmq.Context, bind: str, n_workers: int, heartbeat: float,
                 curve: dict | None = None, on_metrics=None, on_done=None):
        """curve: {"server": (public, secret), "allow": [worker public keys]}, or None for no CURVE."""
        self.ctx, self.n_workers, self.heartbeat = ctx, n_workers, heartbeat
        self.curve = curve
        self.control = make_socket(ctx, zmq.ROUTER, {"server": curve["server"]} if curve else None)
        self.gate = Gate(ctx, log, "not on the allowlist", curve["allow"], watch=self.control) if curve else None
        try:
            self.control.bind(bind)
        except zmq.ZMQError as exc:  # address in use, not this host's: a one-line error, not a traceback
            self.control.close(linger=0)
            if self.gate is not None:
                self.gate.close()
            raise ValueError(f"cannot bind {bind}: {exc.strerror}") from None
        self.endpoint = self.control.getsockopt_string(zmq.LAST_ENDPOINT)
        self.poller = zmq.Poller()   # one for the run: Socket.poll() builds a new one every call
        self.poller.register(self.control, zmq.POLLIN)
        self.next_sweep = 0.0        # when check_liveness next runs
        self.assigned = False        # roles handed out: from then on every member is needed
        self.members: dict[bytes, Member] = {}
        self.feed: zmq.Socket | None = None
        self.feeds: dict[int, zmq.Socket] = {}
        self.in_flight = 0
        self.results = Results()
        self.on_metrics = on_metrics or (lambda stage, records: None)
        self.on_done = on_done or (lambda meta: None)
        self.procs: dict[int, object] = {}     # stage -> local Popen, for fast death detection
        self.stopping = False
        self.refused = 0
        self._next_id = 0
        self.handlers = {Kind.HELLO: self.on_hello, Kind.READY: self.on_ready, Kind.DONE: self.on_done_msg,
                         Kind.EVALUATED: self.on_evaluated, Kind.METRICS: self.on_metrics_msg,
                         Kind.SYNCED: self.on_synced, Kind.STATE: self.on_state, Kind.BYE: self.on_bye,
                         Kind.HEARTBEAT: lambda member, msg: None}

    def next_id(self) -> int:
        self._next_id += 1
        return self._next_id

    # -- the event pump ------------------------------------------------------------------
    def pump(self, until, timeout: float | None = None, what: str = "") -> None:
        """Handle control messages until `until()` holds; raises WorkerLost or TimeoutError."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not until():
            if self.poller.poll(int(self.heartbeat * 1000 * liveness.POLL_FRACTION)):
                self.receive()
                # Drain what is already queued before the liveness sweep: cheap and fair.
                while not until() and self.poller.poll(0):
                    self.receive()
            # The sweep (a waitpid per local child, clocks per member) costs ~40 µs: a few
            # times a heartbeat is soon enough, once a message (a DONE a batch) is not.
            now = time.monotonic()
            if now >= self.next_sweep:
                self.next_sweep = now + self.heartbeat * liveness.SWEEP_FRACTION
                self.check_liveness()
            if deadline is not None and now > deadline:
                raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")

    def receive(self) -> None:
        frames = self.control.recv_multipart(copy=False)
        identity = frames[0].bytes
        try:
            msg = decode(frames[1:])
        except VersionMismatch as exc:
            self.refuse(identity, str(exc))
            return
        except ProtocolError as exc:
            log.warning("dropped a malformed control message: %s", exc)
            return
        member = self.members.get(identity)
        if member is None and msg.kind != Kind.HELLO:
            return  # a stranger, or a refused worker still talking
        if member is None and self.curve:
            # Trust the key the handshake proved (ZAP's user id), not the one the hello claims.
            msg.meta["key"] = frames[1].get("User-Id")
        if member is not None:
            member.liveness.on_heard()
        handler = self.handlers.get(msg.kind)
        if handler is not None:
            handler(member if member is not None else identity, msg)

    def check_liveness(self) -> None:
        for m in list(self.members.values()):
            if self.stopping:
                break
            try:
                self._check(m)
            except WorkerLost as exc:
                if self.assigned or m.proc is not None:
                    raise
                # Before the run begins, a remote worker that left is replaced, not fatal:
                # people start hosts one by one, and restart the one they got wrong.
                log.warning("%s; its place is free for another worker", exc)
                del self.members[m.identity]

    def _check(self, m: Member) -> None:
        proc = m.proc
        if proc is not None and proc.poll() is not None and m.bye is None:
            raise WorkerLost(f"{m.describe()} died with exit code {proc.returncode}")
        if m.liveness.dead() and m.bye is None:
            raise WorkerLost(f"{m.describe()} lost: no heartbeat for {m.liveness.silent_for():.1f} s")
        if m.liveness.should_speak():
            self.send(m, Message(Kind.HEARTBEAT, "coordinator"))

    def send(self, member: Member, msg: Message) -> None:
        try:
            send(self.control, msg, member.identity)
        except zmq.ZMQError as exc:  # ROUTER_MANDATORY: the peer is gone
            raise WorkerLost(f"{member.describe()} lost: its connection closed ({exc})") from None
        member.liveness.on_spoke()

    # -- registration --------------------------------------------------------------------
    def refuse(self, identity: bytes, reason: str) -> None:
        self.refused += 1
        log.warning("refused a worker: %s", reason)
        try:
            send(self.control, Message(Kind.REFUSE, "coordinator", -1, {"reason": reason}), identity)
        except zmq.ZMQError:
            pass

    def on_hello(self, who, msg: Message) -> None:
        if isinstance(who, Member):
            return  # a repeated hello from a registered worker
        want = msg.meta.get("stage")
        taken = {m.stage for m in self.members.values()}
        if len(self.members) >= self.n_workers:
            return self.refuse(who, "the run already has all its workers")
        if want is not None and (not isinstance(want, int) or not 1 <= want <= self.n_workers or want in taken):
            return self.refuse(who, f"stage {want!r} is not free (stages 1..{self.n_workers})")
        if not isinstance(msg.meta.get("endpoint"), str):
            return self.refuse(who, "hello without a data endpoint")
        if self.curve and any(m.hello["key"] == msg.meta["key"] for m in self.members.values()):
            return self.refuse(who, "another worker of this run already uses this key")
        stage = want or min(set(range(1, self.n_workers + 1)) - taken)
        member = Member(who, stage, dict(msg.meta), Liveness(self.heartbeat), proc=self.procs.get(stage))
        self.members[who] = member
        log.info("registered %s, inbox %s", member.describe(), msg.meta["endpoint"])

    def register(self, timeout: float) -> None:
        self.pump(lambda: len(self.members) == self.n_workers, timeout, f"{self.n_workers} workers to register")

    def by_stage(self) -> dict[int, Member]:
        return {m.stage: m for m in self.members.values()}

    def assign(self, roles: list[str], config: dict, links: dict[int, dict] | None = None) -> None:
        """Tell every worker its role and neighbours, then wait until all are ready.

        links[k] = {side: stage or None} names stage k's neighbours (default: prev k-1, next k+1).
        """
        self.assigned = True
        stages = self.by_stage()
        # With CURVE, each inbox admits only the run's members: the workers, and the coordinator that feeds them (stage 1, or every time box).
        members = {"members": [m.hello["key"] for m in stages.values()] + [self.curve["server"][0].decode()]} \
            if self.curve else {}
        for k, m in stages.items():
            m.role = roles[k - 1]

            def peer(j):
                return {"endpoint": stages[j].hello["endpoint"], "key": stages[j].hello.get("key", "")} \
                    if j in stages else None
            self.send(m, Message(Kind.ASSIGN, "coordinator", -1, {
                "role": roles[k - 1], "stage": k, "config": config, "heartbeat": self.heartbeat,
                "neighbours": {side: peer(j) for side, j in (links[k] if links else
                                                              {"prev": k - 1, "next": k + 1}).items()},
                **members}))
        self.pump(lambda: all(m.ready for m in self.members.values()), liveness.READY_TIMEOUT_S, "workers to be ready")
        self.feed = self.feed_to(1)

    def feed_to(self, stage: int) -> zmq.Socket:
        """The coordinator's data socket to a stage (stage 1 always; every time box in an rnn)."""
        if stage not in self.feeds:
            member = self.by_stage()[stage]
            sock = make_socket(self.ctx, zmq.PUSH, {"client": (*self.curve["server"], member.hello["key"].encode())}
                               if self.curve else None)
            sock.connect(member.hello["endpoint"])
            self.feeds[stage] = sock
        return self.feeds[stage]

    def on_ready(self, member: Member, msg: Message) -> None:
        member.ready = True

    # -- data and results ----------------------------------------------------------------
    def send_batch(self, kind: Kind, b: int, x: np.ndarray, y: np.ndarray, window: int, split=None) -> None:
        """Feed stage 1 once a credit is free: at most `window` batches in flight.

        split(x, y) -> {stage: arrays} instead feeds each of several stages its own part of the
        batch (each time box its slice of the sequence); still one credit per batch.
        """
        self.pump(lambda: self.in_flight < window)
        for stage, arrays in (split(x, y) if split else {1: {"x": x, "y": y}}).items():
            send(self.feed_to(stage), Message(kind, "coordinator", b, {}, arrays))
        self.in_flight += 1

    def on_done_msg(self, member: Member, msg: Message) -> None:
        self.in_flight -= 1
        self.on_done(msg.meta)

    def on_evaluated(self, member: Member, msg: Message) -> None:
        self.in_flight -= 1
        r = self.results
        r.batches += 1
        r.samples += msg.meta["n"]
        r.loss_sum += msg.meta["loss_sum"]
        r.correct += msg.meta["correct"]

    def on_metrics_msg(self, member: Member, msg: Message) -> None:
        self.on_metrics(member.stage, msg.meta.get("records", []))

    def sync(self) -> None:
        """Barrier: returns when every message sent so far has been handled by every stage."""
        token = self.next_id()
        send(self.feed, Message(Kind.SYNC, "coordinator", token))
        # Stage 1's SYNCED and the head's last DONEs come over different connections, between
        # which the ROUTER fair-queues: wait for both, or a late DONE would eat an eval credit.
        self.pump(lambda: token in self.results.synced and self.in_flight == 0, None, "the pipeline to drain")

    def on_synced(self, member: Member, msg: Message) -> None:
        self.results.synced.add(msg.id)

    def evaluate(self, x: np.ndarray, y: np.ndarray, batch: int, window: int, split=None) -> tuple[float, float]:
        """(accuracy, mean loss) over x, y through the pipeline, forward only (split: see send_batch)."""
        self.results = Results(synced=self.results.synced)
        for i in range(0, len(x), batch):
            self.send_batch(Kind.EVAL, self.next_id(), x[i:i + batch], y[i:i + batch], window, split)
        self.pump(lambda: self.in_flight == 0, None, "evaluation results")
        r = self.results
        return r.correct / r.samples, r.loss_sum / r.samples

    def collect_state(self) -> dict[int, dict[str, np.ndarray]]:
        """Every stage's parameters, as copies (call after sync so they are consistent)."""
        token = self.next_id()
        self.results.states = {}
        for m in self.members.values():
            self.send(m, Message(Kind.SAVE, "coordinator", token))
        self.pump(lambda: len(self.results.states) == len(self.members), liveness.STATE_TIMEOUT_S, "parameters")
        return self.results.states

    def on_state(self, member: Member, msg: Message) -> None:
        self.results.states[member.stage] = {k: a.copy() for k, a in msg.arrays.items()}

    # -- shutdown ------------------------------------------------------------------------
    def stop(self, timeout: float = liveness.STOP_TIMEOUT_S) -> dict[int, dict]:
        """Ask every worker to stop and wait for its goodbye (with its counters)."""
        self.stopping = True
        for m in self.members.values():
            try:
                self.send(m, Message(Kind.STOP, "coordinator"))
            except WorkerLost:
                m.bye = {}
        try:
            self.pump(lambda: all(m.bye is not None for m in self.members.values()), timeout, "workers to stop")
        except TimeoutError as exc:
            log.warning("%s", exc)
        return {m.stage: m.bye or {} for m in self.members.values()}

    def on_bye(self, member: Member, msg: Message) -> None:
        member.bye = dict(msg.meta)

    def close(self) -> None:
        for sock in self.feeds.values():
            sock.close(linger=0)
        self.control.close(linger=0)
        if self.gate is not None:
            self.gate.close()
