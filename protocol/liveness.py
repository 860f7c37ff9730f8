"""Heartbeats and every timeout of the run, each named once, in heartbeat intervals or seconds."""
from __future__ import annotations

import time

MISSED_HEARTBEATS = 3        # a peer silent for this many heartbeat intervals is dead
POLL_FRACTION = 1 / 2        # the coordinator's pump polls at most this part of an interval
SWEEP_FRACTION = 1 / 8       # ...and sweeps liveness (a waitpid per child, ~40 µs) this often
REGISTER_TIMEOUT_S = 60.0    # a local run's workers must register within this
WORKER_JOIN_TIMEOUT_S = 30.0  # a worker started before its coordinator waits this long for it
READY_TIMEOUT_S = 60.0       # assigned workers must build their stage and connect within this
STATE_TIMEOUT_S = 60.0       # every stage must answer a checkpoint's SAVE within this
STOP_TIMEOUT_S = 10.0        # workers must say goodbye within this after STOP
ABORT_STOP_TIMEOUT_S = 3.0   # ...and within this when the run is being torn down after an error
REAP_TIMEOUT_S = 5.0         # a local worker process must exit within this after its goodbye
KILL_TIMEOUT_S = 2.0         # ...and within this after SIGTERM, before SIGKILL
ABORT_REAP_TIMEOUT_S = 1.0   # after an error, those that said goodbye are gone by then; the rest are stuck
STALL_TIMEOUT_S = 60.0       # the pipeline may make no progress this long, every worker alive, before the run stops
MIN_HEARTBEAT_S = 0.05       # shorter intervals: a busy but healthy peer would look dead
MAX_HEARTBEAT_S = 3600.0     # longer: a dead peer would go unnoticed for hours (and poll()'s ms overflow)
LOG_INTERVAL_S = 10.0        # a log line that input can trigger repeats at most this often per reason
STALL_BELOW_BATCHES = 4      # --synthetic-inputs: no batch through for this many batch times is a stall: the
                             # coordinator feeds the stages above the first ahead, a batch a batch time
FAIL_LINGER_S = 1.0          # a worker that fails waits this long for its last word to reach the coordinator
# What a worker's heartbeat (one every interval) says of it, each a running total: CPU seconds (of the
# process); since it took its role, seconds blocked in poll, of them held (workers/roles/role.py: a locked
# stage awaiting its gradient, a link out of credit) and blocked (the gradient alone); messages dropped.
# The coordinator's status file (`dni top`) takes rates from them.
LOAD = ("cpu", "poll", "held", "blocked", "dropped")


class Liveness:
    """Heartbeat bookkeeping for one peer: any message heard counts; we speak up when silent."""

    def __init__(self, interval: float):
        self.interval = interval
        self.heard = self.spoke = time.monotonic()

    def on_heard(self) -> None:
        self.heard = time.monotonic()

    def on_spoke(self) -> None:
        self.spoke = time.monotonic()

    def should_speak(self) -> bool:
        return time.monotonic() - self.spoke >= self.interval

    def silent_for(self) -> float:
        return time.monotonic() - self.heard

    def dead(self) -> bool:
        return self.silent_for() > MISSED_HEARTBEATS * self.interval
