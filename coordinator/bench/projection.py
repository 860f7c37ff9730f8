"""A projection, from measured costs, of samples/s and stage-1 update latency with a core or a host per stage.

The model, per batch (all times in ms):
- each stage k costs c_k of CPU (its loop's arithmetic, sends, receives and bookkeeping, plus
  its ZeroMQ threads), the coordinator c_C, and a link crossing L = half the measured round
  trip of a message the size of a batch's activations (delay, shaping, kernels and relay);
- dni/cdni, coordinator credit: a batch's credit goes round coordinator -> stage 1 -> ... -> head
  -> coordinator, (K + 1) crossings and every stage's loop on the way; `window` credits share
  that cycle. Link credit: each link holds its own `window`, and its cycle is 2 crossings (the
  batch there, its target back) and the loops of the two ends (the coordinator's CPU for the
  link into stage 1); the slowest link bounds the pipeline. A host
  serves one batch per c_k, and on a shared machine all processes together get `cores`. The
  period is the largest of these bounds. Stage 1's update latency is its own forward, send,
  synthetic gradient and update: its compute and send CPU;
- on one shared machine (the check at 2 stages) the job gets the cores other people's processes
  leave; when it needs them all, its processes take turns and CPU work on a critical path
  is stretched (processor sharing, see `project`);
- backprop: stage 1 updates after the batch has gone up through every stage and its gradient
  down, 2 (K - 1) crossings and every stage's loop on the way; it takes no batch meanwhile.
"""
from __future__ import annotations

from itertools import pairwise

LOOP_PARTS = ("compute", "synth", "send", "receive", "loop")


def loop_ms(stage: dict) -> float:
    """What a stage's own thread spends on one batch: the part on the batch's critical path."""
    return sum(stage[p] for p in LOOP_PARTS)


def project(stages: list[dict], coordinator_ms: float, link: float, mode: str, window: int, batch: int,
            cores: float | None = None, shared_ms: float = 0.0, credit: str = "coordinator") -> dict:
    """samples/s and stage-1 latency; `cores` (with `shared_ms`, CPU of anything else per batch,
    such as the relays) models one machine shared by all, None a core or a host per process;
    credit: "coordinator" or "link" (see the module's docstring)."""
    k = len(stages)
    path = sum(loop_ms(s) for s in stages)
    bounds = {"slowest host": max(max(s["total"] for s in stages), coordinator_ms)}
    own = stages[0]["compute"] + stages[0]["send"]
    if mode == "backprop":
        bounds["locked round trip"] = path + 2 * (k - 1) * link
    elif credit == "link":
        ends = [coordinator_ms, *(loop_ms(s) for s in stages)]
        bounds["credit window"] = max(2 * link + a + b for a, b in pairwise(ends)) / window
    else:
        bounds["credit window"] = ((k + 1) * link + path + coordinator_ms) / window
    stretch = 1.0
    if cores:
        demand = [s["total"] for s in stages] + [coordinator_ms, shared_ms]
        bounds["shared cores"] = sum(demand) / cores
        if bounds["shared cores"] >= max(v for b, v in bounds.items() if b != "shared cores"):
            # Saturated: processor sharing. The job's processes take turns on the cores; n of
            # them with CPU shares c_i count as (sum c)^2 / sum c^2 equal ones, each running at
            # cores/n of a core, so CPU work on a critical path takes n/cores times as long.
            stretch = max(1.0, sum(demand) ** 2 / sum(c * c for c in demand) / cores)
    latency = path * stretch + 2 * (k - 1) * link if mode == "backprop" else own * stretch
    bound = max(bounds, key=bounds.get)
    return {"samples_per_second": batch * 1e3 / bounds[bound], "stage1_latency_ms": latency, "bound": bound,
            "period_ms": bounds, "stretch": stretch}


def extend(stages: list[dict], k: int) -> list[dict]:
    """K stages from measured ones: the first, the mean of the middle ones (or the first's), the head."""
    if k == len(stages):
        return stages
    middles = stages[1:-1] or [stages[0]]
    middle = {p: sum(s[p] for s in middles) / len(middles) for p in middles[0]}
    return [stages[0], *[middle] * (k - 2), stages[-1]]
