"""A time box's copy of the tied weights: what the parameter service's answers told of it, and when it will do."""
from __future__ import annotations


class TiedCopy:
    """The box's requests to the service (PULLs and PUSHes, numbered, answered in order) and what came of them.

    The service's version is at least the newest an answer reported, plus a step for each of the box's own
    pushes not answered yet: they land before anything newer can reach the box. That many updates behind
    is the copy as far as the box knows (its lag), and the box computes at once while the lag is within
    --max-staleness: it waits only when the copy would exceed the bound. A service that takes no steps
    has nothing newer, so a slowed or stopped service leaves the copy in bound until the box's own
    pushes, waiting there, would take it out.
    """

    def __init__(self, bound: int):
        self.bound = bound
        self.requests = 0      # asks sent
        self.answered = 0      # the last ask answered
        self.since = 0         # the last ask before the latest barrier: older answers are not for after it
        self.known = 0         # the newest version of the service an answer reported
        self.pushes: list[int] = []   # the asks of pushes not answered yet
        self.in_hand = False   # an answer to an ask after the barrier came since the last unroll started

    def ask(self, push: bool) -> int:
        """The number of a new request."""
        self.requests += 1
        if push:
            self.pushes.append(self.requests)
        return self.requests

    def expects(self, ask: int) -> bool:
        return self.answered < ask <= self.requests

    def answer(self, ask: int, version: int, staleness: int) -> None:
        """The service was at version + staleness when it answered `ask`, every push up to it applied."""
        self.answered, self.known = ask, max(self.known, version + staleness)
        self.pushes = [a for a in self.pushes if a > ask]
        self.in_hand = self.in_hand or ask > self.since

    def outstanding(self) -> bool:
        """An ask made since the barrier is not answered yet."""
        return self.requests > max(self.answered, self.since)

    def lag(self, version: int) -> int:
        """How many updates a copy of `version` is behind the service, as far as the box knows."""
        return self.known - version + len(self.pushes)

    def ready(self, version: int, fresh: bool) -> bool:
        """May an unroll start on a copy of `version` now? fresh (backprop, evaluation): only on the answer to the
        box's last request, which asked for exactly the weights it needs."""
        if self.answered <= self.since:   # nothing heard since the barrier
            return False
        if fresh:
            return self.in_hand and self.answered == self.requests
        return self.lag(version) <= self.bound

    def started(self) -> None:
        self.in_hand = False

    def barrier(self) -> None:
        """Updates land at a barrier that no answer before it counted: the next unroll hears from the service."""
        self.since, self.in_hand = self.requests, False
