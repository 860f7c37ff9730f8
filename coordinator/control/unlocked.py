"""The complete unlock's feeding (--synthetic-inputs): every stage above the first gets a batch's network input too.

A training batch's INPUT goes to stages 2..N with its FORWARD to stage 1, under stage 1's credit
(`window`, as ever). While batches come through, that is all: the stages above fit their input
synthesizers to each batch's real input when it climbs to them. When none has come through for
STALL_BELOW_BATCHES batch times (a stage below stalled), the coordinator feeds the stages above
ahead, one batch a batch time (the pace batches came through at), up to `ahead` batches
(--run-ahead), each INPUT marked `ahead` (the stages update from it at once, through I); their
FORWARDs wait in a queue for credits. So the stages above a stall keep learning at their own
pace, and none runs ahead of the real chain when nothing stalls.
"""
from __future__ import annotations

import time
from collections import deque

import numpy as np

from coordinator.control.member import Member
from coordinator.control.pipeline import Parts, Pipeline, Split
from protocol import Kind, Message
from protocol.liveness import STALL_BELOW_BATCHES
from protocol.sockets import send

PACE_WEIGHT = 0.1   # the pace is a moving average of the gaps between batches through: over ~10 of them


class UnlockedPipeline(Pipeline):
    """A Pipeline that also sends each training batch's `inputs(x, y)` ({stage: arrays}), and sends them
    ahead of its FORWARD while the real chain stalls."""

    def __init__(self, *args, inputs: Split, ahead: int, **kw):
        super().__init__(*args, **kw)
        self.inputs, self.ahead = inputs, ahead
        self.queued: deque[tuple[int, Parts]] = deque()   # training batches whose FORWARD awaits a credit
        self.pace: float | None = None        # seconds between batches through, while they come
        self.last_done: float | None = None   # when the last came through, or the first since a barrier went in
        self.paced = False                    # last_done is a batch's: the gap to the next one is a batch time
        self.last_input = 0.0                 # when the last INPUT went, or fell due if fed ahead

    def send_batch(self, kind: Kind, b: int, x: np.ndarray, y: np.ndarray) -> None:
        if kind is not Kind.FORWARD:
            return super().send_batch(kind, b, x, y)
        if self.last_done is None:   # the first batch since a barrier (or the start): a stall counts from now
            self.last_done = time.monotonic()
        # A stall shows as time passing: the wait looks again each half batch time.
        self.tick = None if self.pace is None else self.pace / 2
        self.wait(lambda: (len(self.pending) < self.window and not self.queued) or self.stalled_below(),
                  f"a credit for {kind} batch {b}")
        self.tick = None
        ahead = {"ahead": bool(self.queued) or len(self.pending) >= self.window}   # (its FORWARD cannot go yet)
        for stage, arrays in self.inputs(x, y).items():
            send(self.feed_to(stage), Message(Kind.INPUT, "coordinator", b, ahead, arrays))
        now = time.monotonic()
        # A batch fed ahead falls due a batch time after the last one fell due, not after it went: the wait wakes
        # a little late each time, and counting from the send fed at about half the pace (the wait then woke
        # each batch time, just short of it). Up to half a batch time late is made up, not more.
        self.last_input = max(self.last_input + self.pace, now - self.pace / 2) if ahead["ahead"] else now
        self.queued.append((b, self.split(x, y)))
        self.feed_queued()

    def stalled_below(self) -> bool:
        """Whether the stages above may take a batch ahead now: room in the queue, no batch through for
        STALL_BELOW_BATCHES batch times, and a batch time since the last INPUT."""
        if self.pace is None or self.last_done is None or len(self.queued) >= self.ahead:
            return False
        # After a barrier the first batch through has the whole chain to climb: the stall takes twice as long.
        below = STALL_BELOW_BATCHES * self.pace * (1 if self.paced else 2)
        now = time.monotonic()
        return now - self.last_done >= below and now - self.last_input >= self.pace

    def feed_queued(self) -> None:
        """FORWARD the queued batches that stage 1's credit lets in."""
        while self.queued and len(self.pending) < self.window:
            b, parts = self.queued.popleft()
            for stage, arrays in parts.items():
                send(self.feed_to(stage), Message(Kind.FORWARD, "coordinator", b, {}, arrays))
            self.pending.add((Kind.FORWARD, b))

    def on_done_msg(self, member: Member, msg: Message) -> None:
        before = len(self.pending)
        super().on_done_msg(member, msg)
        if len(self.pending) < before:   # a batch came through
            now = time.monotonic()
            if self.paced:
                gap = now - self.last_done
                if self.pace is None:
                    self.pace = gap
                elif gap < STALL_BELOW_BATCHES * self.pace:   # (a stall's gap is no batch time)
                    self.pace += PACE_WEIGHT * (gap - self.pace)
            self.last_done, self.paced = now, True
        self.feed_queued()

    def settled(self) -> bool:
        """Not while batches are queued ahead of a stall below: a barrier would wait out the stall, and the
        stages above would stop learning with it; the evaluation waits until the chain has caught up."""
        return not self.queued

    def sync(self) -> None:
        """The barrier goes in behind every queued batch; the pause it makes (and the evaluation after it) is no
        stall, and the refill after it no batch time, but a stall that begins then is one."""
        self.wait(lambda: not self.queued, "the queued batches to go in")
        super().sync()
        self.last_done, self.paced = None, False

    def reset(self) -> None:
        super().reset()
        self.queued.clear()
        self.last_done, self.paced = None, False
