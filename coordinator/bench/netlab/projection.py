"""A projection, from measured costs, of samples/s and stage-1 update latency with a core or a host per stage.

The model, per batch (all times in ms), every term measured or derived from measured ones:
- each stage k costs c_k of CPU over training (its loop's arithmetic, sends, receives and
  bookkeeping, plus its helper threads: above all ZeroMQ's I/O thread, which encrypts and
  decrypts every message, CURVE), the coordinator c_C, and a link crossing L = half the measured
  round trip of a message the size of a batch's activations over plain TCP (delay, shaping,
  kernels and relay, no CURVE);
- a message's helper work is on its path (encrypted before it leaves, decrypted before the loop
  sees it): a stage's helper CPU per batch, split evenly over the data messages it carries a
  batch (`messages`). At 0 ms that is most of a crossing: a 128 KiB message's CURVE costs about
  0.1 ms at each end, L 0.07 ms;
- dni/cdni, coordinator credit: a batch's credit goes round coordinator -> stage 1 -> ... -> head
  -> coordinator, (K + 1) crossings and every stage's CPU on the way; `window` credits share that
  cycle. Link credit: each link holds its own `window`, and its cycle is 2 crossings (the batch
  there, its target back) and the CPU of its two ends (the coordinator's for the link into stage
  1); the slowest link bounds the pipeline. A host serves one batch per c_k. The period is the
  largest bound. Stage 1's update latency is its own
  forward, send, synthetic gradient and update (compute and send) plus its helper's work on the
  activations it sends: on a core per stage the I/O thread takes that core while it encrypts them;
- backprop: stage 1 updates after the batch has gone up through every stage and its gradient
  down: every stage's CPU but for stage 1's input (decrypted before), and 2 (K - 1) crossings;
  it takes no batch meanwhile.
- gpipe (M micro-batches, a micro-batch costing 1/M of a batch everywhere): the same round trip,
  but the M micro-batches follow each other through the pipeline, so the slowest stage adds
  (M - 1) micro-batches of its own to the fill and drain; the next batch waits for the flush,
  which stage 1 reports to the coordinator (TAKEN) before the coordinator sends it: 2 more
  crossings and the coordinator's CPU a batch.
- pipedream: stage 1 keeps at most K batches between forward and backward (1F1B), so K batches
  share the round trip (every stage's CPU and 2 (K - 1) crossings); under the coordinator's
  credit the window is at least K. A batch's update waits, by Little's law, for the batches
  held at stage 1 ahead of it (K, or the coordinator's window) to go at the pipeline's pace,
  and for no less than its own round trip.
On one shared machine (the check at 2 stages) no scheduler is modelled: other sessions' trainings
fill whatever CPU the job leaves (the job's CPU plus theirs came to 1.85-2.07 cores in every job),
so the cores "left by others" are the job's own CPU rate, not a capacity, and a processor-sharing
stretch built on them made stage-1 p50s 2-8x too long. What the kernel measured instead
(`coordinator.bench.netlab.job.sched_ms`): how long the threads a message goes through (each process's
loop and ZeroMQ I/O threads) waited, runnable, for a core. The check's samples/s (a mean over
batches) take each process's costs with that wait added (`coordinator.bench.netlab.runs.costs`); its
latency (a median) takes none: the median update waits for no one but its own I/O thread, whose
encryption is in the model already (docs/network.md has the measurements).
"""
from __future__ import annotations

from itertools import pairwise


def messages(k: int, i: int) -> int:
    """Data messages stage i (0-based) of k carries a batch: its input in and its output on, a target
    or gradient back in and one back out; stage 1 sends none back, the head has no output and no target."""
    return 4 - (i == 0) - 2 * (i == k - 1)


def message_ms(stages: list[dict], i: int) -> float:
    """Stage i's helper-thread CPU for one of its data messages."""
    return stages[i]["threads"] / messages(len(stages), i)


def project(stages: list[dict], coordinator_ms: float, link: float, mode: str, window: int, batch: int,
            credit: str = "coordinator", micro_batches: int = 1) -> dict:
    """samples/s and stage-1 latency, each process on a core or host of its own;
    credit: "coordinator" or "link"; micro_batches: gpipe's M (see the module's docstring)."""
    k = len(stages)
    slowest = max(s["total"] for s in stages)
    bounds = {"slowest host": max(slowest, coordinator_ms)}
    every = sum(s["total"] for s in stages)
    round_trip = every + 2 * (k - 1) * link
    if mode in ("backprop", "gpipe"):
        m = micro_batches if mode == "gpipe" else 1
        latency = (every + (m - 1) * slowest - message_ms(stages, 0)) / m + 2 * (k - 1) * link
        if mode == "backprop":
            bounds["locked round trip"] = latency
        else:
            bounds["flush"] = latency + 2 * link + coordinator_ms
        return result(bounds, latency, batch)
    if mode == "pipedream" and credit == "coordinator":
        window = max(window, k)
    if credit == "link":
        # pipedream's stages hold batches by 1F1B alone: only the coordinator's link keeps a window
        ends = [coordinator_ms, *(s["total"] for s in stages)][:2 if mode == "pipedream" else None]
        bounds["credit window"] = max(2 * link + a + b for a, b in pairwise(ends)) / window
    else:
        bounds["credit window"] = ((k + 1) * link + every + coordinator_ms) / window
    if mode != "pipedream":
        return result(bounds, stages[0]["compute"] + stages[0]["send"] + message_ms(stages, 0), batch)
    bounds["1F1B limit"] = round_trip / k
    held = window if credit == "coordinator" else k
    return result(bounds, max(round_trip - message_ms(stages, 0), held * max(bounds.values())), batch)


def result(bounds: dict, latency: float, batch: int) -> dict:
    """The figures from the period's bounds (ms per batch; the largest rules) and stage 1's latency."""
    bound = max(bounds, key=bounds.get)
    return {"samples_per_second": batch * 1e3 / bounds[bound], "stage1_latency_ms": latency, "bound": bound,
            "period_ms": bounds}


def extend(stages: list[dict], k: int) -> list[dict]:
    """K stages from measured ones: the first, the mean of the middle ones (or the first's), the head."""
    if k == len(stages):
        return stages
    middles = stages[1:-1] or [stages[0]]
    middle = {p: sum(s[p] for s in middles) / len(middles) for p in middles[0]}
    return [stages[0], *[middle] * (k - 2), stages[-1]]
