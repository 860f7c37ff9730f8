"""Membership: admit workers, assign their roles, notice their loss from heartbeats and exits, stop them."""
from __future__ import annotations

import logging
import math
import time

from coordinator.control.hub import Hub
from coordinator.control.member import Member, WorkerFailed, WorkerLost
from protocol import Kind, Message, liveness
from protocol.drops import quote
from protocol.kinds import DATA
from protocol.liveness import Liveness
from protocol.roles import worker_name
from protocol.sockets import endpoint_fault

log = logging.getLogger("dni.coordinator")


class Membership:
    """The workers on the hub's control socket: who they are, whether they live, what they were assigned."""

    def __init__(self, hub: Hub, n_workers: int):
        self.hub, self.n_workers = hub, n_workers
        self.assigned = False        # roles handed out: from then on every member is needed
        self.stopping = False
        self.members: dict[bytes, Member] = {}
        self.procs: dict[int, object] = {}     # stage -> local launch.Worker: its exit is seen at once
        self.run = ""                # the run directory's name, which each worker shows in ps
        hub.find, hub.admit, hub.sweep = self.members.get, self.admit, self.check_liveness
        hub.handle({Kind.READY: self.on_ready, Kind.BYE: self.on_bye, Kind.HEARTBEAT: self.on_heartbeat})

    def by_stage(self) -> dict[int, Member]:
        return {m.stage: m for m in self.members.values()}

    # -- liveness ------------------------------------------------------------------------
    def on_heartbeat(self, member: Member, msg: Message) -> None:
        seen = msg.meta.get("seen", {})
        # Progress per data kind, kept only if it is what a worker sends: a few kinds, integer ids.
        if len(seen) <= len(DATA) and all(k in DATA and type(v) is int for k, v in seen.items()):
            member.seen = seen
        load = msg.meta.get("load")
        if isinstance(load, dict) and load.keys() == set(liveness.LOAD) and type(load["dropped"]) is int and \
                all(type(v) in (int, float) and 0 <= v < math.inf for v in load.values()):
            member.loads.append((time.monotonic(), load))

    def check_liveness(self) -> None:
        if not self.stopping:
            self._check_unregistered()
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

    def _check_unregistered(self) -> None:
        """A local worker that exited before its hello: lost at once, with what it said last (its exit is known)."""
        registered = {m.stage for m in self.members.values()}
        for stage, proc in self.procs.items():
            if stage not in registered and proc.poll() is not None:
                words = proc.last_line()
                raise WorkerLost(f"the worker for stage {stage} (pid {proc.pid}) exited with code {proc.returncode} "
                                 f"before it registered{': ' + quote(words, 300)[1:-1] if words else ''}", stage)

    def _check(self, m: Member) -> None:
        if m.bye is None and (lost := m.died()):
            m.bye = {}   # gone: stopping the others need not wait for its goodbye
            raise lost
        if m.liveness.dead() and m.bye is None:
            m.bye = {}
            raise WorkerLost(f"{m.describe()} lost: no heartbeat for {m.liveness.silent_for():.1f} s", m.stage)
        if m.liveness.should_speak():
            self.hub.send(m, Message(Kind.HEARTBEAT, "coordinator"))

    # -- admission -----------------------------------------------------------------------
    def admit(self, identity: bytes, msg: Message) -> None:
        """A stranger's hello: it becomes a member for the stage it asks for (or the first free one), or is refused."""
        hub = self.hub
        if hub.curve:
            # Trust the key the handshake proved (ZAP's user id), not the one the hello claims.
            msg.meta["key"] = msg.peer
        want = msg.meta.get("stage")
        taken = {m.stage for m in self.members.values()}
        if len(self.members) >= self.n_workers:
            return hub.refuse(identity, "the run already has all its workers")
        if want is not None and (not isinstance(want, int) or not 1 <= want <= self.n_workers or want in taken):
            return hub.refuse(identity, f"stage {want!r} is not free (stages 1..{self.n_workers})")
        if why := endpoint_fault(msg.meta["endpoint"]):
            return hub.refuse(identity, f"hello with a bad data endpoint: {why}")
        if hub.curve and any(m.hello["key"] == msg.meta["key"] for m in self.members.values()):
            return hub.refuse(identity, "another worker of this run already uses this key")
        stage = want or min(set(range(1, self.n_workers + 1)) - taken)
        proc = self.procs.get(stage)
        if proc is not None and msg.meta["pid"] != proc.pid:   # a replacement that died while its hello was parked
            return hub.refuse(identity, f"stage {stage} waits for the worker started for it (pid {proc.pid})")
        member = Member(identity, stage, dict(msg.meta), Liveness(hub.heartbeat), proc=proc)
        self.members[identity] = member
        log.info("registered %s, inbox %s", member.describe(), msg.meta["endpoint"])

    def register(self, timeout: float | None, stop=lambda: False) -> None:
        """Wait for every worker, or until stop() holds (a signal)."""
        self.hub.pump(lambda: stop() or len(self.members) == self.n_workers, timeout,
                      f"{self.n_workers} workers to register")

    def forget(self, stage: int) -> None:
        """Drop a lost stage's worker, and kill it if ours and still there (stopped, or hung)."""
        for m in [m for m in self.members.values() if m.stage == stage]:
            del self.members[m.identity]
        proc = self.procs.get(stage)
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    # -- assignment ----------------------------------------------------------------------
    def assign(self, roles: list[str], config: dict, links: dict[int, dict[str, int | None]],
               states: dict[int, dict] | None = None, start: int = 0, eval_start: int = 0) -> None:
        """Tell every worker its role, the wire config and its neighbours, then wait until all are ready.

        links[k] = {side: stage or None} names stage k's neighbours; states[k], stage k's
        checkpointed state to start from, `start` the first batch id (a resumed or restarted run), and
        `eval_start` the first evaluation id (Pipeline's secret start).
        """
        self.assigned = True
        stages, curve = self.by_stage(), self.hub.curve
        # With CURVE, each inbox admits only the run's members: the workers, and the coordinator
        # that feeds them (stage 1, or every time box).
        members = {}
        if curve:
            members = {"members": [m.hello["key"] for m in stages.values()] + [curve["server"][0].decode()]}

        def peer(j):
            if j not in stages:
                return None
            return {"endpoint": stages[j].hello["endpoint"], "key": stages[j].hello.get("key", ""),
                    "name": worker_name(roles[j - 1], j)}
        for k, m in stages.items():
            m.role = roles[k - 1]
            self.hub.send(m, Message(Kind.ASSIGN, "coordinator", -1, {
                "role": roles[k - 1], "stage": k, "config": config, "heartbeat": self.hub.heartbeat, "start": start,
                "eval_start": eval_start, "run": self.run,
                "neighbours": {side: peer(j) for side, j in links[k].items()}, **members}, (states or {}).get(k, {})))
        self.hub.pump(lambda: all(m.ready for m in self.members.values()), liveness.READY_TIMEOUT_S,
                      "workers to be ready")

    def on_ready(self, member: Member, msg: Message) -> None:
        member.ready = True

    # -- shutdown ------------------------------------------------------------------------
    def stop(self, timeout: float = liveness.STOP_TIMEOUT_S) -> dict[int, dict]:
        """Ask every worker to stop and wait for its goodbye (with its counters)."""
        self.stopping = True
        for m in self.members.values():
            try:
                self.hub.send(m, Message(Kind.STOP, "coordinator"))
            except WorkerLost:
                m.bye = {}
        try:
            self.hub.pump(lambda: all(m.bye is not None for m in self.members.values()), timeout, "workers to stop")
        except TimeoutError as exc:
            log.warning("%s", exc)
        return {m.stage: m.bye or {} for m in self.members.values()}

    def on_bye(self, member: Member, msg: Message) -> None:
        member.bye = dict(msg.meta)
        if "error" in msg.meta and not self.stopping:   # when stopping, the first error is already on its way
            raise WorkerFailed(f"{member.describe()}: {quote(msg.meta['error'], 300)[1:-1]}")
