"""The run's metrics in bounded memory: the latency sketch against numpy, and no growth per step."""
import math
import tracemalloc

import numpy as np
import pytest

from coordinator.metrics import COSINE_STEPS, MetricsLog, percentiles
from coordinator.quantiles import GROWTH, Quantiles

CLOSE = GROWTH - 1   # how far the sketch's p50/p99 may be from numpy's: a bucket's width


def sketch(values) -> dict:
    q = Quantiles()
    for v in values:
        q.add(v)
    return q.summary()


@pytest.mark.parametrize("n", [300, 100_000])
def test_the_sketch_is_within_a_bucket_of_numpy(n):
    # Update latencies are skewed: a body around 1 ms and a tail of waits ten times longer.
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.lognormal(0, 0.3, n - n // 20), rng.lognormal(2.3, 0.5, n // 20)])
    got, want = sketch(values), percentiles(values)
    assert got["n"] == want["n"] == n
    for p in ("p50", "p99"):
        assert abs(got[p] / want[p] - 1) <= CLOSE, (p, got[p], want[p])


def test_the_sketch_of_one_value_is_that_value_and_of_none_is_empty():
    assert sketch([0.731]) == {"p50": 0.731, "p99": 0.731, "n": 1}
    assert sketch([]) == {"p50": None, "p99": None, "n": 0}
    assert sketch([0.0]) == {"p50": 0.0, "p99": 0.0, "n": 1}
    # NaN, inf and what no float holds (a tampered metrics.jsonl read back on --resume) are left out.
    assert sketch([float("nan"), float("inf"), 10 ** 400, 1e308, 2.0]) == {"p50": 2.0, "p99": 2.0, "n": 1}


def test_metrics_log_keeps_no_memory_per_step(tmp_path):
    log = MetricsLog(tmp_path)
    rng = np.random.default_rng(1)

    def steps(first: int, n: int) -> None:
        for step in range(first, first + n):
            log.write(1, [{"step": step, "latency_ms": float(rng.lognormal(0, 0.5)), "cos": math.sin(step)}])

    steps(0, 5_000)   # every bucket the distribution reaches is made by now
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    steps(5_000, 20_000)
    grown = sum(s.size_diff for s in tracemalloc.take_snapshot().compare_to(before, "filename"))
    tracemalloc.stop()
    log.close()
    # Kept values would take ~150 bytes a step (3 MB here); what is left is the sketch's few new buckets.
    assert grown < 20_000, grown
    assert log.latency_summary()["1"]["n"] == 25_000
    assert log.synth_cosine()["1"] == pytest.approx(np.mean([math.sin(s) for s in range(25_000 - COSINE_STEPS,
                                                                                          25_000)]))
