#!/usr/bin/env bash
# Issue 2's figures (issue 10: every mode at the defaults): 20 epochs of MNIST 784-256-256-10, batch 128, in each mode, one after
# another on this machine, then single-process numpy backprop speed measured right after.
# usage: bash benchmarks/mnist_accuracy.sh [DATA_DIR] [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-../shared/data/mnist}
OUT=${2:-runs/mnist20}
DNI=${DNI:-.venv/bin/dni}
PY=${PY:-.venv/bin/python}
common=(--data "$DATA" --epochs 20 --hidden 256,256 --batch-size 128 --no-progress)
$DNI run "${common[@]}" --mode backprop --out "$OUT/backprop"
$DNI run "${common[@]}" --mode cdni --out "$OUT/cdni"
$DNI run "${common[@]}" --mode dni --out "$OUT/dni"
for threads in 1 2; do
  OPENBLAS_NUM_THREADS=$threads $PY benchmarks/reference_speed.py "$DATA" backprop > "$OUT/reference-$threads.json"
done
$PY - "$OUT" <<'PY'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
s = {m: json.loads((out / m / "summary.json").read_text()) for m in ("backprop", "cdni", "dni")}
ref = {t: json.loads((out / f"reference-{t}.json").read_text())["samples_per_second"] for t in (1, 2)}
print(f"{'mode':9} {'test acc':>8} {'wall s':>7} {'samples/s':>10} {'stage1 p50 ms':>14}")
for m, r in s.items():
    print(f"{m:9} {r['test_accuracy']:8.4f} {r['train_seconds']:7.1f} {r['samples_per_second']:10.0f} "
          f"{r['update_latency_ms']['1']['p50']:14.3f}")
b = s["backprop"]["update_latency_ms"]["1"]["p50"]
for m in ("dni", "cdni"):
    d = s[m]["update_latency_ms"]["1"]["p50"]
    print(f"stage 1 median update latency: {m} {d:.3f} ms, backprop {b:.3f} ms, ratio backprop/{m} {b / d:.2f}")
for t, v in ref.items():
    ratios = ", ".join(f"3-process {m} / that = {s[m]['samples_per_second'] / v:.2f}" for m in ("dni", "cdni"))
    print(f"single-process numpy backprop, {t} BLAS thread(s): {v:.0f} samples/s; {ratios}")
PY
