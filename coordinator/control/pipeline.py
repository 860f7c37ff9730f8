"""Driving the pipeline: feed batches under a credit window, barriers, evaluation totals, state collection."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import zmq

from coordinator.control.membership import Member, Membership
from protocol import Kind, Message, liveness
from protocol.sockets import make_socket, send

Parts = dict[int, dict[str, np.ndarray]]
Split = Callable[[np.ndarray, np.ndarray], Parts]


def to_stage_one(x: np.ndarray, y: np.ndarray) -> Parts:
    """The whole batch to stage 1 (a feed-forward network's input split)."""
    return {1: {"x": x, "y": y}}


@dataclass
class EvalTotals:
    """What the head reports of the evaluation batches."""
    samples: int = 0
    loss_sum: float = 0.0
    correct: int = 0


class Pipeline:
    """Feeds the assigned workers and collects what they report, over the membership's control socket."""

    def __init__(self, members: Membership, on_metrics=None, on_done=None):
        self.members = members
        self.feeds: dict[int, zmq.Socket] = {}
        self.in_flight = 0
        self.synced: set[int] = set()          # barrier tokens stage 1 has answered
        self.totals = EvalTotals()
        self.states: dict[int, dict[str, np.ndarray]] = {}
        self.on_metrics = on_metrics or (lambda stage, records: None)
        self.on_done = on_done or (lambda meta: None)
        self._next_id = 0
        members.handle({Kind.DONE: self.on_done_msg, Kind.EVALUATED: self.on_evaluated,
                        Kind.METRICS: self.on_metrics_msg, Kind.SYNCED: self.on_synced, Kind.STATE: self.on_state})

    def next_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def feed_to(self, stage: int) -> zmq.Socket:
        """The coordinator's data socket to a stage (stage 1 always; every time box in an rnn)."""
        if stage not in self.feeds:
            member, curve = self.members.by_stage()[stage], self.members.curve
            sock = make_socket(self.members.ctx, zmq.PUSH,
                               {"client": (*curve["server"], member.hello["key"].encode())} if curve else None)
            sock.connect(member.hello["endpoint"])
            self.feeds[stage] = sock
        return self.feeds[stage]

    # -- data under credit ---------------------------------------------------------------
    def send_batch(self, kind: Kind, b: int, x: np.ndarray, y: np.ndarray, window: int,
                   split: Split = to_stage_one) -> None:
        """Feed a batch once a credit is free: at most `window` batches in flight.

        split(x, y) -> {stage: arrays} says which stage gets which part of the batch (each time
        box its slice of the sequence); still one credit per batch.
        """
        self.members.pump(lambda: self.in_flight < window, None, f"a credit for {kind} batch {b}")
        for stage, arrays in split(x, y).items():
            send(self.feed_to(stage), Message(kind, "coordinator", b, {}, arrays))
        self.in_flight += 1

    def on_done_msg(self, member: Member, msg: Message) -> None:
        self.in_flight -= 1
        self.on_done(msg.meta)

    def on_metrics_msg(self, member: Member, msg: Message) -> None:
        self.on_metrics(member.stage, msg.meta.get("records", []))

    # -- barrier -------------------------------------------------------------------------
    def sync(self) -> None:
        """Barrier: returns when every message sent so far has been handled by every stage."""
        token = self.next_id()
        send(self.feed_to(1), Message(Kind.SYNC, "coordinator", token))
        # Stage 1's SYNCED and the head's last DONEs come over different connections, between
        # which the ROUTER fair-queues: wait for both, or a late DONE would eat an eval credit.
        self.members.pump(lambda: token in self.synced and self.in_flight == 0, None, "the pipeline to drain")

    def on_synced(self, member: Member, msg: Message) -> None:
        self.synced.add(msg.id)

    # -- evaluation ----------------------------------------------------------------------
    def evaluate(self, x: np.ndarray, y: np.ndarray, batch: int, window: int,
                 split: Split = to_stage_one) -> tuple[float, float]:
        """(accuracy, mean loss) over x, y through the pipeline, forward only (split: see send_batch)."""
        self.totals = EvalTotals()
        for i in range(0, len(x), batch):
            self.send_batch(Kind.EVAL, self.next_id(), x[i:i + batch], y[i:i + batch], window, split)
        self.members.pump(lambda: self.in_flight == 0, None, "evaluation results")
        t = self.totals
        return t.correct / t.samples, t.loss_sum / t.samples

    def on_evaluated(self, member: Member, msg: Message) -> None:
        self.in_flight -= 1
        self.totals.samples += msg.meta["n"]
        self.totals.loss_sum += msg.meta["loss_sum"]
        self.totals.correct += msg.meta["correct"]

    # -- state collection ----------------------------------------------------------------
    def collect_state(self) -> dict[int, dict[str, np.ndarray]]:
        """Every stage's parameters, as copies (call after sync so they are consistent)."""
        token = self.next_id()
        self.states = {}
        for m in self.members.members.values():
            self.members.send(m, Message(Kind.SAVE, "coordinator", token))
        self.members.pump(lambda: len(self.states) == len(self.members.members), liveness.STATE_TIMEOUT_S,
                          "parameters")
        return self.states

    def on_state(self, member: Member, msg: Message) -> None:
        self.states[member.stage] = {k: a.copy() for k, a in msg.arrays.items()}

    def reset(self) -> None:
        """Forget the pipeline that was (a stage was lost): its credits, barriers, and the feeds to
        inboxes that every worker replaces when it rejoins."""
        self.close()
        self.feeds, self.in_flight, self.synced, self.states = {}, 0, set(), {}

    def close(self) -> None:
        for sock in self.feeds.values():
            sock.close(linger=0)
