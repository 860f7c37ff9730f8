"""Percentiles of a stream in bounded memory: a histogram whose buckets grow by 1% (a log-scale sketch)."""
from __future__ import annotations

import math
from collections import Counter

GROWTH = 1.01   # a bucket's upper edge over its lower: a percentile is off by at most half of this, 0.5%
FLOOR = 1e-6    # smaller values (and 0) share the lowest bucket: a nanosecond, where latencies are in ms
LIMIT = 1e300   # larger values are left out: no latency, and the top bucket's middle must stay a float


class Quantiles:
    """p50/p99 of positive values (update latencies in ms) without keeping them.

    Memory grows with the range of the values, not their number: at most log(max/FLOOR)/log(GROWTH)
    buckets, some 2,800 from 1 ns to 1 h in ms. An answer is the geometric middle of the bucket that
    holds the value of its rank, clamped to the smallest and largest value seen: within 0.5% of that
    value. Against numpy's percentile, which interpolates between the two values around the rank, it
    stays within about 1% once a stage has logged a few hundred steps (tests/test_metrics.py).
    """

    def __init__(self):
        self.buckets: Counter[int] = Counter()
        self.n = 0
        self.low = self.high = None

    def add(self, value: float) -> None:
        if not -LIMIT <= value <= LIMIT:
            return   # a record is not trusted: NaN or inf would spoil every percentile after it (NaN fails this too)
        self.buckets[math.floor(math.log(max(value, FLOOR), GROWTH))] += 1
        self.n += 1
        self.low = value if self.low is None else min(self.low, value)
        self.high = value if self.high is None else max(self.high, value)

    def value(self, bucket: int) -> float:
        """What stands for the values of a bucket: its geometric middle, within what was seen."""
        return min(max(GROWTH ** (bucket + 0.5), self.low), self.high)

    def percentile(self, q: float) -> float:
        rank, seen = round((self.n - 1) * q / 100), 0
        for i in sorted(self.buckets):
            seen += self.buckets[i]
            if seen > rank:
                return self.value(i)
        raise ValueError("no values")

    def cdf(self) -> tuple[list[float], list[float]]:
        """The distribution as (value, fraction of values at or below it), a point per bucket."""
        seen, values, fractions = 0, [], []
        for i in sorted(self.buckets):
            seen += self.buckets[i]
            values.append(self.value(i))
            fractions.append(seen / self.n)
        return values, fractions

    def summary(self) -> dict:
        """The same figures as metrics.percentiles of the values themselves."""
        if not self.n:
            return {"p50": None, "p99": None, "n": 0}
        return {"p50": self.percentile(50), "p99": self.percentile(99), "n": self.n}
