"""Driving the pipeline: feed batches under a credit window, barriers, evaluation totals, state collection.

Credits are counted per batch id: a report for an id that is not in flight (never fed, or
already reported) changes nothing. With per-link credit (`credit="link"` or `"taken"`) a training
batch's credit comes back when stage 1 takes it on (TAKEN), each stage holding its own window for
the next; the head's DONE still reports every batch, and a barrier still waits for them all.
No wait lasts forever: when nothing progresses for the stall timeout while every worker is
alive, the run stops and says where the batch stopped.
"""
from __future__ import annotations

import itertools
import math
import secrets
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np
import zmq

from coordinator.control.hub import Hub
from coordinator.control.member import Member, WorkerFailed
from protocol import Kind, Message, liveness
from protocol.sockets import send
from workers.numerics.optimizers import finite

Parts = dict[int, dict[str, np.ndarray]]
EVAL_IDS = 1 << 62   # where evaluation ids may start: every id of a run stays below 2**63
Split = Callable[[np.ndarray, np.ndarray], Parts]


class Roster(Protocol):
    """All the pipeline needs of the membership: the workers, by stage."""

    def by_stage(self) -> dict[int, Member]: ...


class Stalled(TimeoutError):
    """The pipeline made no progress for the stall timeout while every worker was alive."""


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
    """Feeds the assigned workers and collects what they report, over the hub's control socket.

    window: the most batches in flight (link credit: per stage); split(x, y) -> {stage: arrays} says
    which stage gets which part of a batch (each time box its slice of the sequence); both fixed for the run.
    path: the stages a batch crosses, in order (the last one reports it); None: any member reports.
    max_records: the most metric records one METRICS message may carry (a worker's --log-every).
    credit: "coordinator" (a training batch's credit is the head's DONE), or "link" or "taken" (stage 1's TAKEN).
    """

    def __init__(self, hub: Hub, roster: Roster, window: int, split: Split = to_stage_one, on_metrics=None,
                 on_done=None, path: list[int] | None = None, max_records: int = 10_000,
                 stall: float = liveness.STALL_TIMEOUT_S, credit: str = "coordinator"):
        self.hub, self.roster, self.drops, self.credit = hub, roster, hub.drops, credit
        self.window, self.split = window, split
        self.path, self.max_records, self.stall = path, max_records, stall
        self.feeds: dict[int, zmq.Socket] = {}
        self.pending: set[tuple[Kind, int]] = set()   # (FORWARD or EVAL, batch id) fed, not yet reported
        self.untaken: set[int] = set()                # link credit: training batches fed, not yet taken
        self.barrier: int | None = None               # the SYNC token awaited; None once stage 1 answered
        self.tick: float | None = None                # seconds: how often a wait asks again, messages or not
        self.progress = 0                             # reports taken: what the stall watchdog watches
        self.totals = EvalTotals()
        self.states: dict[int, dict[str, np.ndarray]] = {}
        self.save_token = -1
        self.on_metrics = on_metrics or (lambda stage, records: None)
        self.on_done = on_done or (lambda meta: None)
        self._ids: defaultdict = defaultdict(itertools.count)   # per kind: every stream of ids is consecutive
        self.eval_start = self._new_eval_ids()
        hub.handle({Kind.DONE: self.on_done_msg, Kind.EVALUATED: self.on_evaluated,
                    Kind.METRICS: self.on_metrics_msg, Kind.SYNCED: self.on_synced, Kind.STATE: self.on_state,
                    Kind.TAKEN: self.on_taken})

    def _new_eval_ids(self) -> int:
        """Evaluation ids start at a secret random id, which the workers learn in their assignment (on the
        control connection, which no one else can write on). A forger who can reach an inbox but not
        read that cannot guess an id the windows admit, so no forged batch is evaluated and no forged
        answer can take the place of the real one (issue 25: the reported accuracy falsified)."""
        start = secrets.randbelow(EVAL_IDS)
        self._ids[Kind.EVAL] = itertools.count(start)
        return start

    def feed_to(self, stage: int) -> zmq.Socket:
        """The coordinator's data socket to a stage (stage 1 always; every time box in an rnn)."""
        if stage not in self.feeds:
            self.feeds[stage] = self.hub.dial(self.roster.by_stage()[stage])
        return self.feeds[stage]

    # -- waiting, with a watchdog ----------------------------------------------------------
    def wait(self, until, what: str) -> None:
        """Pump until `until()`; Stalled if no report comes for `stall` seconds while all live."""
        while True:
            mark = self.progress
            try:
                return self.hub.pump(until, self.stall, what, self.tick)
            except TimeoutError:
                if self.progress == mark:
                    raise Stalled(self.where(what)) from None

    def where(self, what: str) -> str:
        """Where the oldest batch stopped, from the progress each worker's heartbeats report."""
        head = f"no progress for {self.stall:.0f} s with every worker alive, waiting for {what}"
        if self.pending:   # the barrier travels behind every batch: the oldest is what stopped first
            kind, b = min(self.pending, key=lambda p: p[1])
        elif self.barrier is not None:
            kind, b = Kind.SYNC, self.barrier
        else:
            return head
        stages = self.roster.by_stage()
        order = self.path or sorted(stages)
        for i, k in enumerate(order):
            if k in stages and stages[k].seen.get(kind, -1) < b:
                return f"{head}: {kind} {b} stopped before {stages[k].describe()}, which never took it in" \
                    + (self.held_at(order[i - 1], k, b) if i and kind is Kind.FORWARD else "")
        return f"{head}: {kind} {b} went through every stage, and no answer came back"

    def held_at(self, k: int, nxt: int, b: int) -> str:
        """With link credit, whether stage k holds batch b for want of targets from stage nxt."""
        stages = self.roster.by_stage()
        answered = stages[k].seen.get(Kind.GRAD, -1) if k in stages else b
        if self.credit != "link" or b - 1 - answered < self.window:
            return ""
        return (f"; {stages[k].describe()} holds it for want of credit: the last target it took from "
                f"stage {nxt} was for batch {answered}")

    # -- data under credit ---------------------------------------------------------------
    def first_id(self, step: int) -> int:
        """The wire id training batch `step` is fed under (the workers' id windows begin there)."""
        return step

    def send_batch(self, kind: Kind, b: int, x: np.ndarray, y: np.ndarray) -> None:
        """Feed a batch, split across the stages it enters, once a credit is free: at most `window` in flight."""
        link = kind is Kind.FORWARD and self.credit != "coordinator"
        self.wait(lambda: len(self.untaken if link else self.pending) < self.window, f"a credit for {kind} batch {b}")
        for stage, arrays in self.split(x, y).items():
            send(self.feed_to(stage), Message(kind, "coordinator", b, {}, arrays))
        self.pending.add((kind, b))
        if link:
            self.untaken.add(b)

    def on_taken(self, member: Member, msg: Message) -> None:
        if member.stage != (self.path or [1])[0] or msg.id not in self.untaken:
            return self.drops("a credit for no batch fed to that stage", f"{msg.id} from {member.describe()}")
        self.untaken.discard(msg.id)
        self.progress += 1

    def reported(self, member: Member, msg: Message, kind: Kind) -> bool:
        """Whether msg reports a batch of this kind in flight, from the stage that reports; it is then done."""
        if self.path is not None and member.stage != self.path[-1]:
            self.drops("a report from a stage that does not report", f"{msg.kind} from {member.describe()}")
            return False
        if (kind, msg.id) not in self.pending:
            self.drops("a report for no batch in flight", f"{msg.kind} {msg.id} from {member.describe()}")
            return False
        self.pending.discard((kind, msg.id))
        self.progress += 1
        return True

    def on_done_msg(self, member: Member, msg: Message) -> None:
        if msg.meta["correct"] > msg.meta["n"]:
            return self.drops("a report that does not add up", f"{msg.kind} {msg.id}")
        if not math.isfinite(msg.meta["loss"]) and (Kind.FORWARD, msg.id) in self.pending:
            raise WorkerFailed(f"{member.describe()}: the loss is {msg.meta['loss']} at step {msg.id}")
        if self.reported(member, msg, Kind.FORWARD):
            self.on_done(msg.meta)

    def on_metrics_msg(self, member: Member, msg: Message) -> None:
        records = msg.meta["records"]
        if len(records) > self.max_records:
            return self.drops("more metric records than a worker keeps", f"{len(records)} from {member.describe()}")
        self.on_metrics(member.stage, records)

    # -- barrier -------------------------------------------------------------------------
    def sync(self) -> None:
        """Barrier: returns when every message sent so far has been handled by every stage."""
        self.barrier = next(self._ids[Kind.SYNC])
        send(self.feed_to(1), Message(Kind.SYNC, "coordinator", self.barrier))
        # Stage 1's SYNCED and the head's last DONEs come over different connections, between
        # which the ROUTER fair-queues: wait for both, or a late DONE would eat an eval credit.
        self.wait(lambda: self.barrier is None and not self.pending, "the pipeline to drain")

    def settled(self) -> bool:
        """Whether a barrier now waits on nothing but the batches in flight (an evaluation may be made now)."""
        return True

    def on_synced(self, member: Member, msg: Message) -> None:
        if msg.id != self.barrier:
            return self.drops("a barrier answer for no barrier", f"{msg.id} from {member.describe()}")
        self.barrier = None
        self.progress += 1

    # -- evaluation ----------------------------------------------------------------------
    def evaluate(self, x: np.ndarray, y: np.ndarray, batch: int) -> tuple[float, float]:
        """(accuracy, mean loss) over x, y through the pipeline, forward only."""
        self.totals = EvalTotals()
        for i in range(0, len(x), batch):
            self.send_batch(Kind.EVAL, next(self._ids[Kind.EVAL]), x[i:i + batch], y[i:i + batch])
        self.wait(lambda: not self.pending, "evaluation results")
        t = self.totals
        return t.correct / t.samples, t.loss_sum / t.samples

    def on_evaluated(self, member: Member, msg: Message) -> None:
        if msg.meta["correct"] > msg.meta["n"] or not math.isfinite(msg.meta["loss_sum"]):
            return self.drops("a report that does not add up", f"{msg.kind} {msg.id}")
        if self.reported(member, msg, Kind.EVAL):
            self.totals.samples += msg.meta["n"]
            self.totals.loss_sum += msg.meta["loss_sum"]
            self.totals.correct += msg.meta["correct"]

    # -- state collection ----------------------------------------------------------------
    def collect_state(self) -> dict[int, dict[str, np.ndarray]]:
        """Every stage's parameters, as copies (call after sync so they are consistent).

        WorkerFailed if any is not finite: no checkpoint is written from them, the last good one stays.
        """
        self.save_token = next(self._ids[Kind.SAVE])
        self.states = {}
        stages = self.roster.by_stage()
        for m in stages.values():
            self.hub.send(m, Message(Kind.SAVE, "coordinator", self.save_token))
        self.hub.pump(lambda: len(self.states) == len(stages), liveness.STATE_TIMEOUT_S, "parameters")
        for k, arrays in sorted(self.states.items()):
            for name, a in arrays.items():
                if not finite(a):
                    raise WorkerFailed(f"{stages[k].describe()}: its parameters ({name}) are not finite; "
                                       "no checkpoint written from them")
        return self.states

    def on_state(self, member: Member, msg: Message) -> None:
        if msg.id != self.save_token or member.stage in self.states:
            return self.drops("parameters nobody asked for", f"{msg.id} from {member.describe()}")
        self.states[member.stage] = {k: a.copy() for k, a in msg.arrays.items()}

    def reset(self) -> None:
        """Forget the pipeline that was (a stage was lost): its credits, barriers, and the feeds to
        inboxes that every worker replaces when it rejoins. The new roles' id windows start afresh:
        barrier ids count from 0 again, evaluation ids from a new secret start, training ids from the
        step it goes back to."""
        self.close()
        self.feeds, self.pending, self.untaken, self.barrier = {}, set(), set(), None
        self.states, self.save_token = {}, -1
        self._ids.clear()
        self.eval_start = self._new_eval_ids()

    def close(self) -> None:
        for sock in self.feeds.values():
            sock.close(linger=0)
