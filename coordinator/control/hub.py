"""The control socket: binding (behind the Gate), the poller and the pump, sending, receiving, dispatch by kind.

The hub knows no roster of its own: membership tells it who an identity is (`find`), takes the
hellos of strangers (`admit`) and sweeps liveness (`sweep`); rejoin takes the hellos of members
told to reset (`rejoin`). Everyone else registers handlers for the kinds it takes (`handle`).
"""
from __future__ import annotations

import logging
import time
from typing import Callable

import zmq

from coordinator.control.member import Handler, Member, WorkerLost
from protocol import Kind, Message, ProtocolError, VersionMismatch, liveness
from protocol.auth import Gate
from protocol.drops import Drops, RateLimited, quote
from protocol.kinds import DATA
from protocol.sockets import ipv6_fault, make_socket, recv, send

log = logging.getLogger("dni.coordinator")


class Hub:
    """The coordinator's ROUTER socket and its event pump; wait in `pump` for what you await."""

    def __init__(self, ctx: zmq.Context, bind: str, heartbeat: float, curve: dict | None = None):
        """curve: {"server": (public, secret), "allow": [worker public keys]}, or None for no CURVE."""
        if why := ipv6_fault(bind):
            raise ValueError(f"cannot bind {why}")
        self.ctx, self.heartbeat, self.curve = ctx, heartbeat, curve
        self.control = make_socket(ctx, zmq.ROUTER, {"server": curve["server"]} if curve else None)
        self.gate = Gate(ctx, log, "not on the allowlist", curve["allow"], watch=self.control) if curve else None
        try:
            self.control.bind(bind)
        except zmq.ZMQError as exc:  # address in use, not this host's: a one-line error, not a traceback
            self.close()
            raise ValueError(f"cannot bind {bind}: {exc.strerror}") from None
        self.endpoint = self.control.getsockopt_string(zmq.LAST_ENDPOINT)
        self.poller = zmq.Poller()   # one for the run: Socket.poll() builds a new one every call
        self.poller.register(self.control, zmq.POLLIN)
        self.next_sweep = 0.0        # when `sweep` next runs
        self.handlers: dict[Kind, Handler] = {}
        # Wired by membership and rejoin (see the module's docstring), which are built on the hub.
        self.find: Callable[[bytes], Member | None] | None = None
        self.admit: Callable[[bytes, Message], None] | None = None
        self.rejoin: Handler | None = None
        self.sweep: Callable[[], None] | None = None
        self.drops = Drops(log)              # every message dropped, by reason; in the summary
        self.refusals = RateLimited(log)

    def handle(self, handlers: dict[Kind, Handler]) -> None:
        """Route these kinds, from registered workers, to these handlers."""
        self.handlers.update(handlers)

    def pump(self, until: Callable[[], bool], timeout: float | None = None, what: str = "",
             tick: float | None = None) -> None:
        """Handle control messages until `until()` holds; raises WorkerLost or TimeoutError.
        tick: seconds; `until` is asked at least this often, messages or not (it may turn true with time)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        poll_s = self.heartbeat * liveness.POLL_FRACTION if tick is None else min(tick, self.heartbeat *
                                                                                  liveness.POLL_FRACTION)
        try:
            while not until():
                if self.poller.poll(max(1, int(poll_s * 1000))):
                    self.receive()
                    # Drain what is already queued before the liveness sweep: cheap and fair.
                    while not until() and self.poller.poll(0):
                        self.receive()
                # The sweep (a waitpid per local child, clocks per member) costs ~40 µs: a few
                # times a heartbeat is soon enough, once a message (a DONE a batch) is not.
                now = time.monotonic()
                if now >= self.next_sweep:
                    self.next_sweep = now + self.heartbeat * liveness.SWEEP_FRACTION
                    self.sweep()
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
        member = self.find(identity)
        if member is None:
            if msg.kind == Kind.HELLO:  # from a stranger; anything else is a refused worker still talking
                return self.admit(identity, msg)
            return self.drops("not from a member", f"{msg.kind} from {quote(msg.src)}")
        if self.curve is not None and msg.peer != member.hello["key"]:
            return self.drops("not from the key the member joined with", f"{msg.kind} from {member.describe()}")
        member.liveness.on_heard()
        if member.rejoining:
            if msg.kind == Kind.HELLO:
                self.rejoin(member, msg)
            return   # sent before it dropped its role: about batches the restart does again
        handler = self.handlers.get(msg.kind)
        if handler is None:
            why = "a data kind on the control socket" if msg.kind in DATA else "not a kind the coordinator takes"
            return self.drops(why, f"{msg.kind} from {member.describe()}")
        handler(member, msg)

    def send(self, member: Member, msg: Message) -> None:
        # Never blocks: a worker that does not read its queue gets nothing more, and its silence
        # soon names it dead; meanwhile the coordinator serves everyone else.
        try:
            send(self.control, msg, member.identity, block=False)
        except zmq.Again:
            return self.drops("not sent: the peer does not read", f"{msg.kind} to {member.describe()}")
        except zmq.ZMQError as exc:  # ROUTER_MANDATORY: the peer is gone
            # A local worker's exit says more than its socket, whichever the coordinator notices first.
            raise member.died() or WorkerLost(f"{member.describe()} lost: its connection closed ({exc})",
                                              member.stage) from None
        member.liveness.on_spoke()

    def refuse(self, identity: bytes, reason: str) -> None:
        self.refusals.warning("refused", "refused a worker: %s", reason)
        self.drops.counts["refused"] += 1
        try:  # never blocks: a client that sends and never reads must not freeze the coordinator
            send(self.control, Message(Kind.REFUSE, "coordinator", -1, {"reason": reason}), identity, block=False)
        except zmq.ZMQError:
            self.drops("refusal not sent: the peer does not read")

    def dial(self, member: Member) -> zmq.Socket:
        """A PUSH socket connected to a member's data inbox (with CURVE, to the key it joined with)."""
        curve = self.curve
        sock = make_socket(self.ctx, zmq.PUSH,
                           {"client": (*curve["server"], member.hello["key"].encode())} if curve else None)
        sock.connect(member.hello["endpoint"])
        return sock

    def close(self) -> None:
        self.control.close(linger=0)
        if self.gate is not None:
            self.gate.close()
