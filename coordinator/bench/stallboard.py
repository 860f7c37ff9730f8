"""The figures of `dni bench stall`: update rates around the stall, validation across it, the table and the plot."""
from __future__ import annotations

import math
from bisect import bisect_left

from coordinator.bench.plot import require, save

BIN_S = 0.5   # the plot's update rates: updates counted in bins of this many seconds
RUNS = ("unstalled", "stalled")


def update_times(records: list[dict], stages: int) -> dict[int, list[float]]:
    """Each stage's update times (seconds since the epoch, from its metrics records), in order."""
    return {k: sorted(r["time"] for r in records if r["stage"] == k and "time" in r) for k in range(1, stages + 1)}


def count(times: list[float], lo: float, hi: float) -> int:
    return bisect_left(times, hi) - bisect_left(times, lo)


def rate(times: list[float], lo: float, hi: float) -> float | None:
    """Updates per second in [lo, hi); None for an empty window."""
    return count(times, lo, hi) / (hi - lo) if hi > lo else None


def windows(stall: dict, first: float, last: float) -> dict[str, tuple[float, float]]:
    """Before, during and after: the stall's own length each side of it, within the training."""
    start, end = stall["start"], stall["end"]
    span = end - start
    return {"before": (max(start - span, first), start), "during": (start, end), "after": (end, min(end + span, last))}


def figures(row: str, flags: tuple[str, ...], stalled: bool, job: dict, stages: int) -> dict:
    """Every figure of one job, times relative to the start of the stall (or, unstalled, of its window)."""
    summary, stall = job["summary"], job["stall"]
    times = update_times(job["records"], stages)
    first = min(t[0] for t in times.values() if t)
    last = max(t[-1] for t in times.values() if t)
    spans = windows(stall, first, last)
    start = stall["start"]
    # Bins aligned on the stall's start: no bin mixes the last updates before it with the stall.
    bins = range(math.floor((first - start) / BIN_S), math.ceil((last - start) / BIN_S) + 1)
    edges = [start + BIN_S * i for i in bins]
    head_time = {r["step"]: r["time"] for r in job["records"] if r["stage"] == stages and "time" in r}
    return {"row": row, "flags": list(flags), "run": RUNS[stalled], "stall": {**stall, "start": 0.0,
                                                                              "end": stall["end"] - start},
            "steps": summary["steps"], "train_seconds": summary["train_seconds"],
            "test_accuracy": summary["test_accuracy"], "samples_per_second": summary["samples_per_second"],
            "updates": {str(k): len(t) for k, t in times.items()},
            "rates": {str(k): {name: rate(t, *span) for name, span in spans.items()} for k, t in times.items()},
            "updates_during": {str(k): count(t, *spans["during"]) for k, t in times.items()},
            # --synthetic-inputs: each stage's updates through I, and the batches fed ahead it took up late
            "unlock": {k: {name: w[name] for name in ("synthetic_updates", "ahead_late")}
                       for k, w in summary["workers"].items() if "ahead_late" in w},
            "windows_s": {name: [lo - start, hi - start] for name, (lo, hi) in spans.items()},
            # An evaluation follows a barrier at its step: it happened once the head had trained that batch.
            "validation": [{"step": r["step"], "time": head_time[r["step"]] - start, "val_accuracy": r["val_accuracy"]}
                           for r in job["records"] if r["stage"] == 0 and r["step"] in head_time],
            "series": {"time": [t - start for t in edges[:-1]],
                       "rate": {str(k): [count(t, lo, hi) / BIN_S for lo, hi in zip(edges, edges[1:])]
                                for k, t in times.items()}}}


def compare(runs: list[dict], stage: int) -> list[dict]:
    """Each row's stalled run against its unstalled one: test accuracy, and the rates kept during the stall."""
    out = []
    for row in dict.fromkeys(r["row"] for r in runs):
        pair = {r["run"]: r for r in runs if r["row"] == row}
        if set(pair) != set(RUNS):
            continue
        free, hit = pair["unstalled"], pair["stalled"]
        kept = {k: (hit["rates"][k]["during"] / free["rates"][k]["during"]) if free["rates"][k]["during"] else None
                for k in hit["rates"]}
        out.append({"row": row, "test_stalled": hit["test_accuracy"], "test_unstalled": free["test_accuracy"],
                    "test_delta_pp": 100 * (hit["test_accuracy"] - free["test_accuracy"]),
                    "kept_during": kept, "above": {k: kept[k] for k in kept if int(k) > stage}})
    return out


def _rates(r: dict, k: str) -> str:
    return "/".join("-" if v is None else f"{v:.0f}" for v in r["rates"][k].values())


def _val(r: dict, before: bool) -> str:
    v = [e for e in r["validation"] if (e["time"] < 0 if before else e["time"] >= r["stall"]["end"])]
    return "-" if not v else f"{100 * v[-1 if before else 0]['val_accuracy']:.2f}"


def print_run(r: dict) -> None:
    stages = "  ".join(f"{k}: {_rates(r, k)}" for k in r["rates"])
    print(f"  {r['row']:<22} {r['run']:<9}  {stages}   val {_val(r, True)} -> {_val(r, False)}   "
          f"test {100 * r['test_accuracy']:.2f}%", flush=True)


def print_tables(result: dict) -> None:
    p = result["params"]
    print(f"\nstage {p['stage']} of {p['stages']} stalled ({p['how']}) for {p['seconds']:g} s at "
          f"{100 * p['at']:g}% of the batches; updates/s of each stage before/during/after the stall "
          f"(windows of the stall's length), validation accuracy just before -> just after")
    for r in result["runs"]:
        print_run(r)
    for c in result["compare"]:
        kept = ", ".join(f"stage {k} {'-' if v is None else f'{100 * v:.0f}%'}" for k, v in c["kept_during"].items())
        print(f"  {c['row']}: test {100 * c['test_stalled']:.2f}% stalled, {100 * c['test_unstalled']:.2f}% "
              f"unstalled ({c['test_delta_pp']:+.2f} pp); during the stall, of the unstalled rate: {kept}")
    for f in result["refused"]:
        print(f"  {f['row']} not run: dni run refused its flags ({' '.join(f['flags'])}): {f['error']}")
    for f in result["failed"]:
        print(f"  {f['row']} ({f['run']}) failed: {f['error']}")


def draw(result: dict, path: str) -> None:
    """Per row: each stage's update rate against time with the stall shaded, stalled (solid) and unstalled
    (dotted); below it, the validation accuracy across the stall."""
    plt = require()
    rows = list(dict.fromkeys(r["row"] for r in result["runs"]))
    fig, axes = plt.subplots(2, max(len(rows), 1), figsize=(5 * max(len(rows), 1), 7), squeeze=False,
                             sharex="col", gridspec_kw={"height_ratios": (2, 1)})
    for (top, bottom), row in zip(axes.T, rows):
        for r in (r for r in result["runs"] if r["row"] == row):
            style = "-" if r["run"] == "stalled" else ":"
            for i, (k, values) in enumerate(r["series"]["rate"].items()):
                top.plot(r["series"]["time"], values, style, color=f"C{i}", drawstyle="steps-post",
                         label=f"stage {k}, {r['run']}")
            v = r["validation"]
            bottom.plot([e["time"] for e in v], [100 * e["val_accuracy"] for e in v], style + "o", color="black",
                        ms=3, label=r["run"])
        for ax in (top, bottom):
            ax.axvspan(0, result["params"]["seconds"], color="grey", alpha=0.2, lw=0)
        top.set(title=row, ylabel="updates/s")
        bottom.set(xlabel="seconds from the stall's start", ylabel="validation accuracy (%)")
        top.legend(fontsize=7, ncol=2)
        bottom.legend(fontsize=7)
    m, p = result["machine"], result["params"]
    save(plt, fig, path, f"dni bench stall: stage {p['stage']} of {p['stages']} stalled by {p['how']} for "
         f"{p['seconds']:g} s; {m['cpus']} cpus, load average {m['load_average'][0]:.2f}")
