"""What the hostile-input checks cost: samples/s of the DNI step with and without them, same arithmetic.

Runs the single-process reference (the very Stage objects and step order the workers run) on a
784-256-256-10 cDNI network, batch 128, one BLAS thread, alternating rounds with the checks as
shipped and with `finite` replaced by a no-op, plus the receiver's per-message checks (input,
labels, gradient) that a worker makes and the reference does not. Messages are not in the
loop, so the share found here is an upper bound on the share in a multi-process run.

    OPENBLAS_NUM_THREADS=1 nice python benchmarks/finite_checks.py
"""
import workers.runtime.blas  # noqa: F401  (first: pins BLAS threads before numpy loads)

# isort: split

import os
import sys
import time

import numpy as np

from protocol import Kind, Message
from protocol.wireconfig import WireConfig
from workers.numerics import optimizers
from workers.numerics.reference import build_network, step
from workers.roles import guard

SIZES, BATCH, STEPS, ROUNDS = (784, 256, 256, 10), 128, 300, 5


def run(checks: bool) -> float:
    finite = optimizers.finite
    if not checks:
        optimizers.finite = guard.finite = lambda a: True
    try:
        cfg = WireConfig(mode="cdni", optimizer="adam", lr=1e-3, schedule="constant", total_steps=0, synth_lr=1e-5,
                         synth_hidden=0, seed=0, log_every=50, cache=24, sizes=SIZES)
        net = build_network(cfg)
        rng = np.random.default_rng(0)
        x = rng.random((BATCH, SIZES[0]), dtype=np.float32)
        y = rng.integers(0, SIZES[-1], BATCH)
        t0 = time.perf_counter()
        for b in range(STEPS):
            if checks:   # what each worker checks of the messages it takes: inputs, and targets back
                for k, width in enumerate(SIZES[:-1]):
                    h = x if k == 0 else np.ones((BATCH, width), np.float32)
                    batch = Message(Kind.FORWARD, "", b, {}, {"x": h, "y": y})
                    assert guard.batch_fault(batch, width, SIZES[-1]) is None
                    assert guard.grad_fault(h, h) is None
            step(net, b, x, y)
        return STEPS * BATCH / (time.perf_counter() - t0)
    finally:
        optimizers.finite = guard.finite = finite


def main() -> None:
    with_checks, without = [], []
    for _ in range(ROUNDS):
        with_checks.append(run(True))
        without.append(run(False))
    a, b = np.median(with_checks), np.median(without)
    print(f"{'-'.join(map(str, SIZES))} cdni, batch {BATCH}, {STEPS} steps x {ROUNDS} rounds, "
          f"numpy {np.__version__}, BLAS threads {os.environ['OPENBLAS_NUM_THREADS']}")
    print(f"with the checks    {a:,.0f} samples/s (median)")
    print(f"without the checks {b:,.0f} samples/s (median)")
    print(f"cost {100 * (b - a) / b:.1f}% of the serial arithmetic")


if __name__ == "__main__":
    sys.exit(main())
