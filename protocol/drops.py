"""Dropped messages counted per reason, and log lines input can trigger, rate-limited: one per reason per interval."""
from __future__ import annotations

import logging
import time
from collections import Counter

from protocol.liveness import LOG_INTERVAL_S


def quote(text: object, limit: int = 80) -> str:
    """Text a peer chose, safe for a log line: cut short, control characters escaped (no forged lines)."""
    return repr(str(text)[:limit])


class RateLimited:
    """At most one line per reason per interval; the next line says how many were held back.

    Reasons are fixed strings chosen by the code, never by a peer, so what is kept stays small.
    """

    def __init__(self, log: logging.Logger, interval: float = LOG_INTERVAL_S):
        self.log, self.interval = log, interval
        self._last: dict[str, float] = {}
        self._held: Counter = Counter()

    def warning(self, reason: str, fmt: str, *args) -> None:
        now = time.monotonic()
        last = self._last.get(reason)
        if last is not None and now - last < self.interval:
            self._held[reason] += 1
            return
        self._last[reason] = now
        held = self._held.pop(reason, 0)
        if held:
            fmt, args = fmt + " (and %d more like it in the last %.0f s)", (*args, held, now - last)
        self.log.warning(fmt, *args)


class Drops(RateLimited):
    """Messages dropped, counted per reason; each reason logged as RateLimited allows."""

    def __init__(self, log: logging.Logger, interval: float = LOG_INTERVAL_S):
        super().__init__(log, interval)
        self.counts: Counter = Counter()

    def __call__(self, reason: str, detail: str = "") -> None:
        self.counts[reason] += 1
        self.warning(reason, "dropped a message: %s%s", reason, f" ({detail})" if detail else "")

    def total(self) -> int:
        return sum(self.counts.values())
