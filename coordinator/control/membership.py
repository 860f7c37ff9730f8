"""Membership and liveness: admit workers, assign their roles, heartbeat them, notice loss, stop them."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable
from urllib.parse import urlsplit

import zmq

from protocol import Kind, Message, ProtocolError, VersionMismatch, liveness
from protocol.auth import Gate
from protocol.drops import Drops, RateLimited, quote
from protocol.kinds import DATA
from protocol.liveness import Liveness
from protocol.roles import title, worker_name
from protocol.sockets import endpoint_fault, make_socket, recv, send

log = logging.getLogger("dni.coordinator")

Handler = Callable[["Member", Message], None]


class WorkerLost(RuntimeError):
    """A worker died or went silent; the message names its stage and host."""

    def __init__(self, message: str, stage: int | None = None):
        super().__init__(message)
        self.stage = stage


class WorkerFailed(WorkerLost):
    """A worker gave up (it says why), or reported what must stop the run."""


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
    seen: dict = field(default_factory=dict)   # data kind -> the last id it took, from its heartbeats
    rejoining: bool = False      # told to reset: what it sends until its new hello is stale

    def describe(self) -> str:
        # Hostnames repeat (containers, namespaces); the address the worker advertised does not.
        endpoint = str(self.hello.get("endpoint", ""))
        address = f"{urlsplit(endpoint).hostname}, " if endpoint.startswith("tcp://") else ""
        host, pid = self.hello.get("host", "?"), self.hello.get("pid", "?")
        return f"{title(self.role, self.stage)} on {host} ({address}pid {pid})"


class Membership:
    """The control socket and the workers on it: who they are, whether they live, what they were assigned.

    Other parts of the control plane add handlers for their kinds (`handle`) and wait in `pump`.
    """

    def __init__(self, ctx: zmq.Context, bind: str, n_workers: int, heartbeat: float, curve: dict | None = None):
        """curve: {"server": (public, secret), "allow": [worker public keys]}, or None for no CURVE."""
        self.ctx, self.n_workers, self.heartbeat, self.curve = ctx, n_workers, heartbeat, curve
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
        self.stopping = False
        self.members: dict[bytes, Member] = {}
        self.parked: list[tuple[bytes, Message]] = []   # newcomers' hellos, until the survivors have rejoined
        self.procs: dict[int, object] = {}     # stage -> local Popen, for fast death detection
        self.handlers: dict[Kind, Handler] = {Kind.READY: self.on_ready, Kind.BYE: self.on_bye,
                                              Kind.HEARTBEAT: self.on_heartbeat}
        self.drops = Drops(log)              # every message dropped, by reason; in the summary
        self.refusals = RateLimited(log)

    def handle(self, handlers: dict[Kind, Handler]) -> None:
        """Route these kinds, from registered workers, to these handlers."""
        self.handlers.update(handlers)

    # -- the event pump ------------------------------------------------------------------
    def pump(self, until, timeout: float | None = None, what: str = "") -> None:
        """Handle control messages until `until()` holds; raises WorkerLost or TimeoutError."""
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
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
        except WorkerLost as exc:
            exc.during = what   # what the run was doing when it noticed (a restart says so)
            raise

    def receive(self) -> None:
        try:
            identity, msg = recv(self.control, router=True, keyed=self.curve is not None)
        except VersionMismatch as exc:
            return self.refuse(exc.identity, str(exc))
        except ProtocolError as exc:
            return self.drops("malformed", str(exc))
        member = self.members.get(identity)
        if member is None:
            if msg.kind == Kind.HELLO:  # from a stranger; anything else is a refused worker still talking
                return self.on_hello(identity, msg)
            return self.drops("not from a member", f"{msg.kind} from {quote(msg.src)}")
        if self.curve is not None and msg.peer != member.hello["key"]:
            return self.drops("not from the key the member joined with", f"{msg.kind} from {member.describe()}")
        member.liveness.on_heard()
        if member.rejoining:
            if msg.kind == Kind.HELLO:
                self.on_rejoin(member, msg)
            return   # sent before it dropped its role: about batches the restart does again
        handler = self.handlers.get(msg.kind)
        if handler is None:
            why = "a data kind on the control socket" if msg.kind in DATA else "not a kind the coordinator takes"
            return self.drops(why, f"{msg.kind} from {member.describe()}")
        handler(member, msg)

    def on_heartbeat(self, member: Member, msg: Message) -> None:
        seen = msg.meta.get("seen", {})
        # Progress per data kind, kept only if it is what a worker sends: a few kinds, integer ids.
        if len(seen) <= len(DATA) and all(k in DATA and type(v) is int for k, v in seen.items()):
            member.seen = seen

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
            m.bye = {}   # gone: stopping the others need not wait for its goodbye
            raise WorkerLost(f"{m.describe()} died with exit code {proc.returncode}", m.stage)
        if m.liveness.dead() and m.bye is None:
            m.bye = {}
            raise WorkerLost(f"{m.describe()} lost: no heartbeat for {m.liveness.silent_for():.1f} s", m.stage)
        if m.liveness.should_speak():
            self.send(m, Message(Kind.HEARTBEAT, "coordinator"))

    def send(self, member: Member, msg: Message) -> None:
        # Never blocks: a worker that does not read its queue gets nothing more, and its silence
        # soon names it dead; meanwhile the coordinator serves everyone else.
        try:
            send(self.control, msg, member.identity, block=False)
        except zmq.Again:
            return self.drops("not sent: the peer does not read", f"{msg.kind} to {member.describe()}")
        except zmq.ZMQError as exc:  # ROUTER_MANDATORY: the peer is gone
            raise WorkerLost(f"{member.describe()} lost: its connection closed ({exc})", member.stage) from None
        member.liveness.on_spoke()

    # -- admission -----------------------------------------------------------------------
    def refuse(self, identity: bytes, reason: str) -> None:
        self.refusals.warning("refused", "refused a worker: %s", reason)
        self.drops.counts["refused"] += 1
        try:  # never blocks: a client that sends and never reads must not freeze the coordinator
            send(self.control, Message(Kind.REFUSE, "coordinator", -1, {"reason": reason}), identity, block=False)
        except zmq.ZMQError:
            self.drops("refusal not sent: the peer does not read")

    def on_hello(self, identity: bytes, msg: Message) -> None:
        if self.curve:
            # Trust the key the handshake proved (ZAP's user id), not the one the hello claims.
            msg.meta["key"] = msg.peer
        if any(m.rejoining for m in self.members.values()):
            # A replacement is admitted only once every survivor has dropped its role.
            if len(self.parked) >= self.n_workers:   # bounded: strangers' hellos cannot pile up
                return self.refuse(identity, "a restart is under way and enough workers wait to replace the lost one")
            return self.parked.append((identity, msg))
        want = msg.meta.get("stage")
        taken = {m.stage for m in self.members.values()}
        if len(self.members) >= self.n_workers:
            return self.refuse(identity, "the run already has all its workers")
        if want is not None and (not isinstance(want, int) or not 1 <= want <= self.n_workers or want in taken):
            return self.refuse(identity, f"stage {want!r} is not free (stages 1..{self.n_workers})")
        if why := endpoint_fault(msg.meta["endpoint"]):
            return self.refuse(identity, f"hello with a bad data endpoint: {why}")
        if self.curve and any(m.hello["key"] == msg.meta["key"] for m in self.members.values()):
            return self.refuse(identity, "another worker of this run already uses this key")
        stage = want or min(set(range(1, self.n_workers + 1)) - taken)
        member = Member(identity, stage, dict(msg.meta), Liveness(self.heartbeat), proc=self.procs.get(stage))
        self.members[identity] = member
        log.info("registered %s, inbox %s", member.describe(), msg.meta["endpoint"])

    def register(self, timeout: float | None, stop=lambda: False) -> None:
        """Wait for every worker, or until stop() holds (a signal)."""
        self.pump(lambda: stop() or len(self.members) == self.n_workers, timeout, f"{self.n_workers} workers to register")

    def by_stage(self) -> dict[int, Member]:
        return {m.stage: m for m in self.members.values()}

    # -- assignment ----------------------------------------------------------------------
    def assign(self, roles: list[str], config: dict, links: dict[int, dict[str, int | None]],
               states: dict[int, dict] | None = None, start: int = 0) -> None:
        """Tell every worker its role, the wire config and its neighbours, then wait until all are ready.

        links[k] = {side: stage or None} names stage k's neighbours; states[k], stage k's
        checkpointed state to start from, and `start` the first batch id (a resumed or restarted run).
        """
        self.assigned = True
        stages = self.by_stage()
        # With CURVE, each inbox admits only the run's members: the workers, and the coordinator that feeds them (stage 1, or every time box).
        members = {"members": [m.hello["key"] for m in stages.values()] + [self.curve["server"][0].decode()]} \
            if self.curve else {}

        def peer(j):
            return {"endpoint": stages[j].hello["endpoint"], "key": stages[j].hello.get("key", ""),
                    "name": worker_name(roles[j - 1], j)} if j in stages else None
        for k, m in stages.items():
            m.role = roles[k - 1]
            self.send(m, Message(Kind.ASSIGN, "coordinator", -1, {
                "role": roles[k - 1], "stage": k, "config": config, "heartbeat": self.heartbeat, "start": start,
                "neighbours": {side: peer(j) for side, j in links[k].items()}, **members}, (states or {}).get(k, {})))
        self.pump(lambda: all(m.ready for m in self.members.values()), liveness.READY_TIMEOUT_S, "workers to be ready")

    def on_ready(self, member: Member, msg: Message) -> None:
        member.ready = True

    # -- restarts ------------------------------------------------------------------------
    def reset(self, lost: int) -> None:
        """Drop the lost stage's worker (killing it, if ours and still there: stopped, or hung);
        every other assigned worker drops its role and rejoins for its own stage."""
        for m in [m for m in self.members.values() if m.stage == lost]:
            del self.members[m.identity]
        proc = self.procs.get(lost)
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        for m in self.members.values():
            if m.role is not None:
                self.send(m, Message(Kind.RESET, "coordinator"))
                m.role, m.ready, m.rejoining, m.seen = None, False, True, {}

    def on_rejoin(self, member: Member, msg: Message) -> None:
        if why := endpoint_fault(msg.meta["endpoint"]):
            return self.drops("a rejoin with a bad data endpoint", f"{why} from {member.describe()}")
        member.hello = {**msg.meta, "key": msg.peer} if self.curve else dict(msg.meta)
        member.rejoining = False
        log.info("%s rejoined, inbox %s", member.describe(), msg.meta.get("endpoint"))
        if not any(m.rejoining for m in self.members.values()):
            parked, self.parked = self.parked, []
            for identity, hello in parked:
                self.on_hello(identity, hello)

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
        if "error" in msg.meta and not self.stopping:   # when stopping, the first error is already on its way
            raise WorkerFailed(f"{member.describe()}: {quote(msg.meta['error'], 300)[1:-1]}")

    def close(self) -> None:
        self.control.close(linger=0)
        if self.gate is not None:
            self.gate.close()
