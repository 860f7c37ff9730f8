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


def held_bytes(stage, n_out: int) -> int:
    """What a stage keeps of one batch after its update, until the batch's target comes: its output h, M's
    prediction ĝ (scored against the target, and mixed into the one sent down under BP(lambda < 1)), and the
    pooling's argmax (one byte a value)."""
    synth = getattr(getattr(stage, "inflight", None), "synth", None)
    pooled = getattr(getattr(stage, "layer", None), "pool", 1) > 1
    return n_out * (4 + (4 if synth is not None else 0) + (1 if pooled else 0))


def bounds(cfg: WireConfig, batch: int, window: int, held: list[int | None]) -> list[dict]:
    """Per stage: its weights, its in-flight activations and the bound on its memory, 4x the weights plus those
    activations, in MB. The activations: `window` batches of its input rows (credit admits no more; each is
    dropped at its update), and what it keeps of each batch it held at once (held, as its worker counted them;
    None, a stage that keeps none after its update: `window` batches of its output rows)."""
    out, conv = [], len(stage_filters(cfg.conv))
    for k, (stage, most) in enumerate(zip(build_network(cfg), held), start=1):
        weights = weight_bytes(stage) / 2**20
        kept = most * held_bytes(stage, cfg.sizes[k]) if most else window * cfg.sizes[k] * 4
        inflight = batch * (window * cfg.sizes[k - 1] * 4 + kept) / 2**20
        out.append({"stage": k, "conv": k <= conv, "weights_mb": weights, "held": most, "inflight_mb": inflight,
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
    rows = against(bounds(cfg, batch, window, [s.get("held_peak") for s in stages]), stages)
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
    print("  stage   weights  held  in flight  bound (4w + a)   start   growth    peak")
    for r in rows:
        kind = "conv" if r["conv"] else "    "
        print(f"  {r['stage']:2d} {kind} {r['weights_mb']:8.2f} {r['held'] or '-':>5} {r['inflight_mb']:10.2f} "
              f"{r['bound_mb']:15.1f} {r['start_rss_mb']:7.1f} {r['growth_mb']:8.1f} {r['peak_rss_mb']:7.1f}"
              + ("" if r["within"] else "  over the bound"))
