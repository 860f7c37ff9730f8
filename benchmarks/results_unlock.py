"""The complete unlock's section of docs/results.md (`python benchmarks/unlock.py`)."""
from results_parts import pct, pp, sources, table


def unlock_section(result: dict) -> list[str]:
    """Accuracy with synthetic inputs against backprop, accuracy against p_update, and the cost in samples/s."""
    name = {(False, "backprop"): "backprop", (False, "cdni"): "cdni", (True, "cdni"): "cdni + synthetic inputs"}
    acc = [[str(r["stages"]), name[r["synthetic_inputs"], r["mode"]], pct(r["test_accuracy"]),
            f"{r['samples_per_second']:,.0f}", f"{r['bytes_per_batch'] / 1024:,.0f} KiB"] for r in result["accuracy"]]
    p1 = {r["synthetic_inputs"]: r["test_accuracy"] for r in result["pupdate"] if r["p_update"] == 1}
    sweep = [[name[r["synthetic_inputs"], "cdni"], f"{r['p_update']:g}", str(r["epochs"]), pct(r["test_accuracy"]),
              pp(r["test_accuracy"] - p1[r["synthetic_inputs"]])] for r in result["pupdate"]]
    cost = {r["name"]: r for r in result["cost"]}
    ratios = [cost[f"cost{i}-cdni-si"]["samples_per_second"] / cost[f"cost{i}-cdni"]["samples_per_second"]
              for i in (1, 2, 3)]
    return ["## The complete unlock: synthetic inputs and random update schedules", "", *result["notes"], "",
            "The cost, cdni without and with synthetic inputs one after the other, three times (1 epoch, 3 stages):",
            f"samples/s with them / without: {', '.join(f'{r:.2f}' for r in ratios)}.", "",
            "```sh", f"python benchmarks/unlock.py accuracy --epochs {result['accuracy'][0]['epochs']}",
            f"python benchmarks/unlock.py pupdate --epochs {min(r['epochs'] for r in result['pupdate'])}",
            "python benchmarks/unlock.py cost --epochs 1; python benchmarks/unlock.py plot   # then copy "
            "runs/unlock/unlock.json to docs/results/", "```", "",
            *table(["stages", "mode", "test accuracy", "samples/s", "bytes a batch"],
                   ["---:", "---", "---:", "---:", "---:"], acc),
            *table(["mode (3 stages)", "p_update", "epochs", "test accuracy", "vs p = 1"],
                   ["---", "---:", "---:", "---:", "---:"], sweep),
            "![accuracy against p_update](unlock-pupdate.png)", "", *sources(["unlock.json"], [result])]
