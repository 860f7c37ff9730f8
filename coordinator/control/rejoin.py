"""Restarts on the control plane: the survivors drop their roles and rejoin; a replacement waits (parked) till then."""
from __future__ import annotations

import logging

from coordinator.control.member import Member
from coordinator.control.membership import Membership
from protocol import Kind, Message
from protocol.sockets import endpoint_fault

log = logging.getLogger("dni.coordinator")


class Rejoin:
    """Resets the run's workers after a loss and takes them back; strangers' hellos are parked meanwhile."""

    def __init__(self, members: Membership):
        self.members, self.hub = members, members.hub
        self.parked: list[tuple[bytes, Message]] = []   # newcomers' hellos, until the survivors have rejoined
        self.hub.admit, self.hub.rejoin = self.admit, self.on_rejoin

    def under_way(self) -> bool:
        """Whether some survivor has yet to rejoin."""
        return any(m.rejoining for m in self.members.members.values())

    def complete(self) -> bool:
        """Whether every stage has its worker again: the survivors rejoined, the lost stage's replaced."""
        return len(self.members.members) == self.members.n_workers and not self.under_way()

    def admit(self, identity: bytes, msg: Message) -> None:
        # A replacement is admitted only once every survivor has dropped its role.
        if not self.under_way():
            return self.members.admit(identity, msg)
        if len(self.parked) >= self.members.n_workers:   # bounded: strangers' hellos cannot pile up
            return self.hub.refuse(identity, "a restart is under way and enough workers wait to replace the lost one")
        self.parked.append((identity, msg))

    def reset(self, lost: set[int]) -> None:
        """Drop the lost stages' workers; every other assigned worker drops its role and rejoins for its own stage.

        Called again when another stage is lost during a restart: those lost before stay dropped, the
        survivors already told to reset are not told again, and a newcomer parked behind a survivor
        that is now lost too is admitted."""
        for stage in lost:
            self.members.forget(stage)
        for m in list(self.members.members.values()):
            if m.role is not None:
                self.hub.send(m, Message(Kind.RESET, "coordinator"))
                m.drop_role()
        self.release()

    def on_rejoin(self, member: Member, msg: Message) -> None:
        if why := endpoint_fault(msg.meta["endpoint"]):
            return self.hub.drops("a rejoin with a bad data endpoint", f"{why} from {member.describe()}")
        member.hello = {**msg.meta, "key": msg.peer} if self.hub.curve else dict(msg.meta)
        member.rejoining = False
        log.info("%s rejoined, inbox %s", member.describe(), msg.meta.get("endpoint"))
        self.release()

    def release(self) -> None:
        """Admit the parked newcomers once no survivor has yet to rejoin."""
        if not self.under_way():
            parked, self.parked = self.parked, []
            for identity, hello in parked:
                self.members.admit(identity, hello)

    def wait(self, timeout: float | None, what: str, stop=lambda: False) -> None:
        """Pump until complete(), or until stop() holds (a signal)."""
        self.hub.pump(lambda: stop() or self.complete(), timeout, what)
