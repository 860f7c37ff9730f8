"""The conv net in each mode on MNIST, one run after another; writes the rows of docs/results/conv.json.

usage: python benchmarks/conv_accuracy.py [--data DIR] [--epochs 5] [--conv 32,64] [--pool 2]
                                         [--modes backprop,cdni,dni] [--out runs/conv] [--collect] [--flags='...']
Runs `dni run --conv CONV --pool POOL --hidden 256 --seed 0` in OUT/<mode> for each mode, then
writes OUT/conv.json; --collect only reads the summary.json of runs already made there. --flags: further
`dni run` options for every run (a candidate's), kept in its rows as `flags`.
"""
import argparse
import json
import subprocess
import sys
from pathlib import Path

MODES = "backprop,cdni,dni"


def row(mode: str, summary: dict, flags: list[str]) -> dict:
    return {"mode": mode, **({"flags": " ".join(flags)} if flags else {}), "conv": summary["conv"],
            "pool": summary["pool"], "sizes": summary["sizes"],
            "epochs": summary["epochs"], "test_accuracy": summary["test_accuracy"],
            "train_seconds": summary["train_seconds"], "samples_per_second": summary["samples_per_second"],
            "stage1_p50_ms": summary["update_latency_ms"]["1"]["p50"],
            "synth_cosine": summary.get("synth_cosine", {}),
            "peak_rss_mb": {k: w["peak_rss_mb"] for k, w in summary["workers"].items()}}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="../shared/data/mnist")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--conv", default="32,64")
    p.add_argument("--pool", default="2")
    p.add_argument("--modes", default=MODES)
    p.add_argument("--out", type=Path, default=Path("runs/conv"))
    p.add_argument("--collect", action="store_true", help="only gather the runs already in --out")
    p.add_argument("--flags", type=str.split, default=[], help="further dni run options, as one argument: "
                   "--flags='--bp-lambda 0.5'")
    args = p.parse_args()
    modes = args.modes.split(",")
    for mode in () if args.collect else modes:
        # A longer heartbeat than the default: a conv stage's batch can take seconds on a loaded machine.
        subprocess.run([sys.executable, "-m", "coordinator", "run", "--data", args.data, "--conv", args.conv,
                        "--pool", args.pool, "--hidden", "256", "--seed", "0", "--mode", mode,
                        "--epochs", str(args.epochs), "--heartbeat", "3", "--no-progress", "--overwrite",
                        "--out", str(args.out / mode), *args.flags], check=True)
    rows = [row(mode, json.loads((args.out / mode / "summary.json").read_text()), args.flags) for mode in modes]
    (args.out / "conv.json").write_text(json.dumps(rows, indent=1) + "\n")
    for r in rows:
        print(f"{r['mode']:9} {r['test_accuracy']:.4f}  {r['samples_per_second']:,.0f} samples/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
