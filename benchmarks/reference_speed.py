"""Samples/s of single-process numpy training of a network, for side-by-side comparisons.

usage: python benchmarks/reference_speed.py DATA_DIR MODE [HIDDEN] [EPOCHS]
BLAS threads come from the environment (OPENBLAS_NUM_THREADS), set by the caller.
"""
import json
import sys
import time

import numpy as np

from coordinator.data import batches, load_mnist
from coordinator.lists import parse
from protocol.wireconfig import WireConfig
from workers.numerics.reference import build_network, step


def main(data_dir: str, mode: str, hidden: str = "256,256", epochs: str = "1") -> None:
    data = load_mnist(data_dir)
    cfg = WireConfig(sizes=(784, *parse(hidden, "HIDDEN"), 10), mode=mode, optimizer="adam", lr=3e-4,
                     schedule="constant", total_steps=0, synth_lr=1e-4, synth_hidden=0, seed=0, log_every=1, cache=4)
    net = build_network(cfg)
    rng = np.random.default_rng(0)
    b, t0 = 0, time.perf_counter()
    for _ in range(int(epochs)):
        for x, y in batches(data.x_train, data.y_train, 128, rng):
            step(net, b, x, y)
            b += 1
    seconds = time.perf_counter() - t0
    print(json.dumps({"mode": mode, "samples_per_second": int(epochs) * len(data.x_train) / seconds}))


if __name__ == "__main__":
    main(*sys.argv[1:])
