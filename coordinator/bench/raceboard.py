"""The results of `dni bench race`: who reached the target first per setting and by what factor; printout; plot."""
from __future__ import annotations

from coordinator.bench.plot import require, save


def setting_runs(runs: list[dict], stages: int, delay: float, first_delay: float) -> list[dict]:
    """The runs of one setting; the single-process row (run at the first delay only: no links) in each."""
    return [r for r in runs if r["stages"] == stages and (r["delay_ms"] == delay or
                                                          (r["single_process"] and r["delay_ms"] == first_delay))]


def ranked(runs: list[dict]) -> list[dict]:
    """The runs by time to target, those that never reached it last (by best validation accuracy)."""
    return sorted(runs, key=lambda r: (r["time_to_target_s"] is None, r["time_to_target_s"] or 0,
                                       -r["best_val_accuracy"]))


def settings(runs: list[dict], target: float, delays: list[float]) -> list[dict]:
    """Per depth and delay: the rows ranked, the first to the target, and how many times sooner than the next;
    and the highest target every row of the setting reached (the one to race for at 0 ms)."""
    out = []
    for stages in dict.fromkeys(r["stages"] for r in runs):
        for delay in delays:
            order = ranked(setting_runs(runs, stages, delay, delays[0]))
            reached = [r for r in order if r["time_to_target_s"] is not None]
            first = reached[0] if reached else None
            factor = reached[1]["time_to_target_s"] / max(first["time_to_target_s"], 1e-9) \
                if len(reached) > 1 else None
            out.append({"stages": stages, "delay_ms": delay, "target": target, "order": [r["row"] for r in order],
                        "first": first and first["row"], "next": reached[1]["row"] if len(reached) > 1 else None,
                        "factor": factor, "reached_by_all": min((r["best_val_accuracy"] for r in order), default=None)})
    return out


def print_settings(rows: dict[str, str], single_threads: int) -> None:
    print(f"rows (each `dni run` with these flags; single: the same network in one process, BLAS on "
          f"{single_threads} threads)")
    for name, flags in rows.items():
        print(f"  {name:<12} {flags}")


def _seconds(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def print_run(i: int, n: int, r: dict, target: float) -> None:
    print(f"[{i}/{n}] {r['row']} K={r['stages']} {r['delay_ms']:g} ms: {100 * target:.1f}% after "
          f"{_seconds(r['time_to_target_s'])} s, best {100 * r['best_val_accuracy']:.2f}%, "
          f"test {100 * r['test_accuracy']:.2f}%, {r['samples_per_second']:,.0f} samples/s", flush=True)


HEADER = ("row", "to target s", "samples", "test", "samples/s", "s1 p50/p99 ms", "cpu ms/b", "rss MB", "KB/b/link")


def _line(r: dict) -> str:
    """A run's row of the table: its figures in HEADER's order, the accuracies at the budgets after the samples."""
    links = r["bytes_per_batch"].values()
    kb = sum(v["forward"] + v["backward"] for v in links) / max(len(links), 1) / 1024
    lat = "/".join("-" if v is None else f"{v:.2f}" for v in r["stage1_latency_ms"].values())
    budgets = "".join(f"{'-' if a is None else f'{100 * a:.1f}':>8}" for a in r["val_at_budget"].values())
    return (f"  {r['row']:<16} {_seconds(r['time_to_target_s']):>11} {r['samples_to_target'] or '-':>9}{budgets} "
            f"{100 * r['test_accuracy']:>6.2f}% {r['samples_per_second']:>10,.0f} {lat:>14} "
            f"{sum(r['cpu_ms_per_batch']):>9.2f} {max(r['peak_rss_mb']):>7.0f} {kb:>10.1f}")


def print_tables(result: dict) -> None:
    runs, p, first_delay = result["runs"], result["params"], result["settings"][0]["delay_ms"]
    for s in result["settings"]:
        print(f"\n{s['stages']} stages, {s['delay_ms']:g} ms per link ({result['where']}): "
              f"target {100 * s['target']:.1f}% validation accuracy")
        name, to, samples, *rest = HEADER
        print(f"  {name:<16} {to:>11} {samples:>9}" + "".join(f"{f'@{b:g}s':>8}" for b in p["budgets"])
              + f" {rest[0]:>7} {rest[1]:>10} {rest[2]:>14} {rest[3]:>9} {rest[4]:>7} {rest[5]:>10}")
        by_row = {r["row"]: r for r in setting_runs(runs, s["stages"], s["delay_ms"], first_delay)}
        for row in s["order"]:
            print(_line(by_row[row]))
        if s["first"] is None:
            print("  no row reached the target")
        else:
            sooner = f", {s['factor']:.2f}x sooner than {s['next']}" if s["next"] else ", the only one"
            print(f"  first to the target: {s['first']}{sooner}")
        if s["reached_by_all"] is not None:
            print(f"  the highest target every row reached here: {100 * s['reached_by_all']:.2f}%")
        for f in result["failed"]:
            if (f["stages"], f["delay_ms"]) == (s["stages"], s["delay_ms"]):
                print(f"  {f['row']} failed: {f['error']}")


def draw(result: dict, path: str) -> None:
    """Validation accuracy against training seconds, a panel per depth and delay, a line per row."""
    plt = require()
    panels = result["settings"]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.2), squeeze=False)
    first_delay = panels[0]["delay_ms"]
    for ax, s in zip(axes[0], panels):
        for r in setting_runs(result["runs"], s["stages"], s["delay_ms"], first_delay):
            v = r["validation"]
            ax.plot([e["train_seconds"] for e in v], [e["val_accuracy"] for e in v], ".-", label=r["row"])
        ax.axhline(s["target"], color="grey", lw=0.8, ls=":")
        ax.set_title(f"{s['stages']} stages, {s['delay_ms']:g} ms per link")
        ax.set_xlabel("training seconds (evaluations paused)")
        ax.set_ylabel("validation accuracy")
        ax.legend(fontsize=8)
    m = result["machine"]
    save(plt, fig, path, f"{m['cpus']} cpus, load average {m['load_average'][0]:.2f}, {result['where']}")
