"""A stage's peak memory against its bound: 4x its weights plus its in-flight activations (`dni bench latency`)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from coordinator.bench import report
from workers.numerics.conv import stage_filters
from workers.numerics.reference import build_network

if TYPE_CHECKING:
    from protocol.wireconfig import WireConfig

BOUND_WEIGHTS = 4   # weights, their gradients and Adam's two moments


def weight_bytes(stage) -> int:
    """The learned arrays of a stage: its layer's (or the head's) and its synthesizer's."""
    layer = stage.head if hasattr(stage, "head") else stage.layer
    synth = getattr(getattr(stage, "inflight", None), "synth", None)
    arrays = [*layer.params.values(), *(synth.params.values() if synth is not None else ())]
    return sum(a.nbytes for a in arrays)


def bounds(cfg: WireConfig, batch: int, window: int) -> list[dict]:
    """Per stage: its weights, its in-flight activations (`window` batches of its input and output rows,
    float32) and the bound on its memory, 4x the weights plus those activations, in MB."""
    out, conv = [], len(stage_filters(cfg.conv))
    for k, stage in enumerate(build_network(cfg), start=1):
        weights = weight_bytes(stage) / 2**20
        inflight = window * batch * (cfg.sizes[k - 1] + cfg.sizes[k]) * 4 / 2**20
        out.append({"stage": k, "conv": k <= conv, "weights_mb": weights, "inflight_mb": inflight,
                    "bound_mb": BOUND_WEIGHTS * weights + inflight})
    return out


def against(bound: list[dict], stages: list[dict]) -> list[dict]:
    """Each stage's bound beside what its worker used: its peak RSS, the RSS it started with (the process's
    baseline: interpreter, numpy, ZeroMQ; no stage yet), and the growth between, which the bound is for."""
    rows = []
    for b, s in zip(bound, stages):
        growth = s["peak_rss_mb"] - s["start_rss_mb"]
        rows.append({**b, "peak_rss_mb": s["peak_rss_mb"], "start_rss_mb": s["start_rss_mb"], "growth_mb": growth,
                     "within": growth <= b["bound_mb"]})
    return rows


def measure(cfg: WireConfig, batch: int, window: int, stages: list[dict]) -> list[dict]:
    """The stages' rows of a dni run (`pipeline` in latency.py), against their bounds, printed."""
    rows = against(bounds(cfg, batch, window), stages)
    print_memory(rows)
    return rows


def targets(rows: list[dict] | None) -> list[dict]:
    """The issue's memory target, on the conv stages' largest growth over its bound (none without conv stages)."""
    if not rows:
        return []
    worst = max(r["growth_mb"] / r["bound_mb"] for r in rows if r["conv"])
    return [report.target("conv stages' peak RSS over their start / (4x weights + in-flight activations)",
                          worst, "<=", 1.0)]


def print_memory(rows: list[dict]) -> None:
    print("\nmemory by stage, MB (dni run): peak RSS = the worker's start (its baseline) + the growth the bound is for")
    print("  stage   weights  in flight  bound (4w + a)   start   growth    peak")
    for r in rows:
        kind = "conv" if r["conv"] else "    "
        print(f"  {r['stage']:2d} {kind} {r['weights_mb']:8.2f} {r['inflight_mb']:10.2f} {r['bound_mb']:15.1f} "
              f"{r['start_rss_mb']:7.1f} {r['growth_mb']:8.1f} {r['peak_rss_mb']:7.1f}"
              + ("" if r["within"] else "  over the bound"))
