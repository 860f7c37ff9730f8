"""The stall's section of docs/results.md: update rates around a stalled stage, and what it cost (`dni bench stall`)."""
from pathlib import Path

from results_parts import machine, pct, pp, sources, table

# stall.json (SIGSTOP) first, then the other runs of the bench (stall-quota.json, ...)
STALLS = sorted((p.name for p in (Path(__file__).resolve().parents[1] / "docs" / "results").glob("stall*.json")),
                key=lambda name: (name != "stall.json", name))


def stall_run(name: str, result: dict) -> list[str]:
    """Each run's update rates around the stall, then each row's test accuracy stalled against unstalled."""
    p = result["params"]
    body = [[r["row"], r["run"], *(" / ".join("−" if v is None else f"{v:.0f}" for v in r["rates"][k].values())
                                   for k in r["rates"]), pct(r["test_accuracy"])] for r in result["runs"]]
    pairs = [[c["row"], pct(c["test_stalled"]), pct(c["test_unstalled"]), pp(c["test_delta_pp"] / 100),
              ", ".join(f"{k}: {'−' if v is None else f'{100 * v:.0f}%'}" for k, v in c["above"].items())]
             for c in result["compare"]]
    # --synthetic-inputs (runs since the JSON has them): each stage's updates through I, and the inputs fed ahead
    # it took up late (its own stall: it waited for their real input instead)
    through_i = [r for r in result["runs"] if r.get("unlock")]
    stages = sorted({k for r in through_i for k in r["unlock"]}, key=int)
    unlocked = [[r["row"], r["run"], *(f"{r['unlock'][k]['synthetic_updates']} / {r['unlock'][k]['ahead_late']}"
                                       for k in stages)] for r in through_i]
    refused = "; ".join(f"{f['row']} (`{' '.join(f['flags'])}`): {f['error']}" for f in result["refused"])
    how = f"slowed to {p['share']:g} of a core" if p["how"] == "quota" else "stopped (SIGSTOP)"
    return [f"**Stage {p['stage']} of {p['stages']} {how}** for {p['seconds']:g} s "
            f"once the head had trained {pct(p['at'])} of the {p['total_steps']:,} batches, against the same job "
            f"unstalled over the same windows. {machine(result)}: read the ratios, not the rates.", "",
            *table(["row", "run", *(f"stage {k} updates/s before / during / after" for k in range(1, p["stages"] + 1)),
                    "test"], ["---", "---", *["---:"] * (p["stages"] + 1)], body),
            *table(["row", "test stalled", "unstalled", "difference", "stages above it during the stall, of their "
                    "unstalled rate"], ["---", "---:", "---:", "---:", "---"], pairs),
            *(table(["row", "run", *(f"stage {k}: updates through I / fed ahead, taken up late" for k in stages)],
                    ["---", "---", *["---:"] * len(stages)], unlocked) if unlocked else []),
            *([f"Not run, refused by `dni run`: {refused}.", ""] if refused else []),
            *sources([name], [result])]


def stall_section(load) -> list[str]:
    """Every run of `dni bench stall`, read with the page's load()."""
    return ["## A stage stalled", "", "`dni bench stall` ([benchmarks.md](benchmarks.md#dni-bench-stall-one-stage-"
            "stalled)): update rates per stage before, during and after the stall, and what it cost in accuracy.", "",
            *(line for name in STALLS for line in stall_run(name, load(name)))]
