"""Where a worker's time goes: a lap clock charging the time since the previous lap to a category."""
from __future__ import annotations

import resource
import time

# What each category means (the loop and the roles call lap() at the boundaries):
#   compute  the stage's own arithmetic inside a handler (forward, synthetic gradient, updates)
#   synth    training the synthesizer on a target that came back
#   send     encoding and handing messages to ZeroMQ
#   receive  taking a message off a socket and decoding it
#   wait     blocked in poll while input is due: a locked stage waiting for its gradient
#            ("blocked", reported on its own too), or a training batch is in flight
#            (from the first training batch after a sync barrier until the next barrier)
#   idle     blocked in poll with no training batch in flight: before the first batch,
#            evaluation gaps, checkpoints, shutdown
#   other    the loop's own bookkeeping (dispatch, heartbeats)
# The categories (blocked aside, which is part of wait) add up to the worker's lifetime.
# Over the same span: cpu, the process's CPU seconds, every thread included (ZeroMQ's I/O
# thread, pyzmq's zero-copy garbage collector), what the worker cost the machine; main_cpu,
# the CPU seconds of the loop's own thread by category (what is left of cpu went to those
# helper threads); and the page faults and context switches the process took.
CATEGORIES = ("compute", "synth", "send", "receive", "wait", "idle", "other")


class Clock:
    def __init__(self):
        self.seconds = dict.fromkeys(CATEGORIES, 0.0)
        self.main_cpu = dict.fromkeys(CATEGORIES, 0.0)
        self.blocked = 0.0
        self.held = 0.0   # of wait: a held stage's (see Role.held), which blocked is part of
        self.mark = time.perf_counter()
        self.cpu_mark = time.thread_time()   # ~0.6 µs a call, a few calls a batch
        self.cpu = time.process_time()
        self.usage = resource.getrusage(resource.RUSAGE_SELF)

    def lap(self, category: str) -> float:
        """Charge the time since the last lap to `category`; returns now (perf_counter)."""
        now, cpu = time.perf_counter(), time.thread_time()
        self.seconds[category] += now - self.mark
        self.main_cpu[category] += cpu - self.cpu_mark
        self.mark, self.cpu_mark = now, cpu
        return now

    def report(self) -> dict[str, float]:
        now, then = resource.getrusage(resource.RUSAGE_SELF), self.usage
        return {**self.seconds, "blocked": self.blocked, "total": sum(self.seconds.values()),
                "cpu": time.process_time() - self.cpu, "main_cpu": dict(self.main_cpu),
                "page_faults": now.ru_minflt - then.ru_minflt,
                "context_switches": now.ru_nvcsw + now.ru_nivcsw - then.ru_nvcsw - then.ru_nivcsw}
