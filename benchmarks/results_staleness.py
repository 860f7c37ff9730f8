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
    """Per mode, rate and hop delay: stage 1's targets' age, and the samples until 90% validation accuracy."""
    stages = rows[0]["stages"]
    body = [[r["mode"], f"{r['lr']:g}", f"{r['hop']:g}", f"{r['delay'] + (stages - 2) * r['hop']:g}",
             "never" if r["samples_to_target"] is None else f"{r['samples_to_target']:,}", pct(r["val_accuracy"])]
            for r in rows]
    return ["## Staleness: what a deep pipeline's late targets cost in samples", "",
            f"The race's network ({stages} stages of {rows[0]['width']}, one epoch of MNIST, validation every 25",
            "batches, target 90%) trained in one process with the same Stage objects, each synthesizer's target",
            "held back as a pipeline holds it: the top hidden stage's by the window's 1 batch, and every stage",
            "below by the hop delay more per stage the target came down through (BP(1): stage 1's arrives",
            f"1 + {stages - 2} x hop batches late). The race's rows at 20 ms per link measured stage 1's targets",
            "8-12 updates old (hop 1.75-2.75) when they ran fast enough to beat PipeDream's pace; PipeDream",
            "itself reached 90% in 12,800 samples there.", "",
            "```sh", COMMAND, "```", "",
            *table(["mode", "layers' rate", "hop delay", "stage 1's targets, batches late", "samples to 90%",
                    "validation after the epoch"], ["---", "---:", "---:", "---:", "---:", "---:"], body),
            f"From [results/{name}](results/{name}).", ""]
