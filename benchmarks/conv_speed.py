"""A conv stage's forward + backward (conv, ReLU, 2x2 max pooling) against PyTorch's CPU conv on the same shapes.

usage: python benchmarks/conv_speed.py [--batch 128] [--repeats 20] [--json FILE]
One BLAS thread on both sides (numpy's pinned before it loads, torch.set_num_threads(1)); the default
MNIST net's two conv stages (28x28x1 -> 32 and 14x14x32 -> 64, 5x5 kernels). The two are timed in
alternation, repeat by repeat, so a loaded machine slows both alike; the medians of their CPU times are
compared (on a shared machine a wall time also counts the waits for a core), the wall times kept beside.
PyTorch is a benchmark-only extra (`pip install -e '.[bench]'`): nothing in the trainer imports it.
"""
import workers.runtime.blas  # noqa: F401  (first: pins BLAS threads before numpy loads)

# isort: split
import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from coordinator.bench.report import machine
from workers.numerics.conv import Conv2D
from workers.numerics.layers import ConvBlock

STAGES = (((28, 28, 1), 32), ((14, 14, 32), 64))   # the default MNIST net's conv stages: (input map, filters)
KERNEL, POOL, TARGET = 5, 2, 2.0                    # the target: within 2x of PyTorch's time


def timed(step) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one step()."""
    cpu, wall = time.process_time(), time.perf_counter()
    step()
    return time.process_time() - cpu, time.perf_counter() - wall


def ours(block: ConvBlock, x: np.ndarray, need_dx: bool) -> None:
    h, route = block.forward_train(x)
    block.backward(x, h, np.ones_like(h), need_dx=need_dx, route=route)


def gemms(conv: Conv2D, x: np.ndarray, need_dx: bool) -> None:
    """Our conv's GEMMs alone, at their shapes chunk by chunk (one chunk's columns, made beforehand, for every
    chunk): the forward, the weight gradient and, with need_dx, the input gradient's (dz's windows along its
    rows times the row weights). What OpenBLAS needs for them bounds what im2col, the windows, the additions
    and pooling may add."""
    cols = conv.im2col(x[:conv.chunk].reshape(-1, *conv.shape)).copy()
    w = conv.params["W"]
    dz = np.ones((len(cols), conv.filters), w.dtype)
    windows = np.ones((len(cols), conv.kernel * conv.filters), w.dtype)
    by_rows = np.ones((conv.kernel * conv.filters, conv.kernel * conv.shape[2]), w.dtype)
    for _ in conv.chunks(len(x)):
        np.matmul(cols, w)
        np.matmul(cols.T, dz)
        if need_dx:
            np.matmul(windows, by_rows)


def theirs(torch, conv, x, need_dx: bool) -> None:
    x.requires_grad_(need_dx)
    h = torch.nn.functional.max_pool2d(torch.relu(conv(x)), POOL)
    h.backward(torch.ones_like(h))


def stage(torch, shape: tuple[int, int, int], filters: int, batch: int, repeats: int, first: bool) -> dict:
    rng = np.random.default_rng(0)
    block = ConvBlock(shape, filters, KERNEL, POOL, rng)
    x = rng.standard_normal((batch, int(np.prod(shape)))).astype(np.float32)
    conv = torch.nn.Conv2d(shape[2], filters, KERNEL, padding=KERNEL // 2)
    xt = torch.from_numpy(x.reshape(batch, *shape)).permute(0, 3, 1, 2).contiguous()
    times = {"ours": [], "torch": [], "gemm": []}
    for _ in range(repeats + 2):   # the first two warm both up (buffers, page faults)
        times["ours"].append(timed(lambda: ours(block, x, not first)))
        times["torch"].append(timed(lambda: theirs(torch, conv, xt, not first)))
        times["gemm"].append(timed(lambda: gemms(block.conv, x, not first)))
    row = {"input": list(shape), "filters": filters}
    for side, t in times.items():
        row[f"{side}_ms"] = statistics.median(cpu for cpu, _ in t[2:]) * 1e3
        row[f"{side}_wall_ms"] = statistics.median(wall for _, wall in t[2:]) * 1e3
    return {**row, "ratio": row["ours_ms"] / row["torch_ms"]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--json", type=Path, help="write the result here")
    args = p.parse_args()
    try:
        import torch
    except ImportError:
        print("conv_speed: PyTorch is not installed: pip install -e '.[bench]'", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    rows = [stage(torch, shape, filters, args.batch, args.repeats, first=k == 0)
            for k, (shape, filters) in enumerate(STAGES)]
    for r in rows:
        print(f"{'x'.join(map(str, r['input']))} -> {r['filters']}: CPU ours {r['ours_ms']:.1f} ms, "
              f"torch {r['torch_ms']:.1f} ms, {r['ratio']:.2f}x (wall {r['ours_wall_ms']:.1f} and "
              f"{r['torch_wall_ms']:.1f} ms); our GEMMs alone {r['gemm_ms']:.1f} ms")
    worst = max(r["ratio"] for r in rows)
    result = {"machine": machine(), "torch": torch.__version__, "batch": args.batch, "repeats": args.repeats,
              "clock": "cpu",
              "stages": rows, "targets": [{"name": "slowest conv stage's time over PyTorch's", "value": worst,
                                           "op": "<=", "limit": TARGET, "pass": worst <= TARGET}]}
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
