"""The race's staleness section of docs/results.md: samples to the target against the age of the targets."""
import json
from pathlib import Path

from results_parts import pct, table

COMMAND = ("dni bench sweep --data ../shared/data/mnist --modes cdni,dni --stages 6 --lr adam:1e-3,adam:5e-4 "
           "--epochs 1 --delay 1 --hop-delay 0,0.5,1,1.5,2,2.5 --eval-every 25 --target 0.9 --json staleness.jsonl")


def load_jsonl(path: Path) -> list[dict]:
    """The rows `dni bench sweep --json` appended, one JSON object a line."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def staleness_section(name: str, rows: list[dict]) -> list[str]:
    """Per mode, rate and hop delay: stage 1's targets' age, and the samples until the target accuracy."""
    stages, delay, target = rows[0]["stages"], rows[0]["delay"], pct(rows[0]["target"])
    body = [[r["mode"], f"{r['lr']:g}", f"{r['hop']:g}", f"{delay + (stages - 2) * r['hop']:g}",
             "never" if r["samples_to_target"] is None else f"{r['samples_to_target']:,}", pct(r["val_accuracy"])]
            for r in rows]
    return ["## Staleness: what a deep pipeline's late targets cost in samples", "",
            f"The race's network ({stages} stages of {rows[0]['width']}, one epoch of MNIST, target {target})",
            "trained in one process with the same Stage objects, each synthesizer's target held back as a",
            f"pipeline holds it: the top hidden stage's by {delay:g} batch(es), and every stage below by the hop",
            "delay more per stage the target came down through (BP(1): stage 1's arrives",
            f"{delay:g} + {stages - 2} x hop batches late). In the race at 6 stages and 20 ms per link the one dni",
            "row faster than PipeDream (cdni-taken, race.json) fitted stage 1's targets 7.0 updates old on",
            "average (hop 1.5); PipeDream itself reached 90% in 12,800 samples there.", "",
            "```sh", COMMAND, "```", "",
            *table(["mode", "layers' rate", "hop delay", "stage 1's targets, batches late", f"samples to {target}",
                    "validation after the epoch"], ["---", "---:", "---:", "---:", "---:", "---:"], body),
            f"From [results/{name}](results/{name}).", ""]
