"""BLAS threads: one per process unless DNI_BLAS_THREADS says otherwise; importing this pins the process itself."""
from __future__ import annotations

import os
import sys
from collections.abc import Mapping

# The thread counts OpenBLAS, OpenMP and MKL read once, when numpy loads them.
VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def threads(env: Mapping[str, str]) -> str:
    """BLAS threads per worker process: DNI_BLAS_THREADS, or 1."""
    return env.get("DNI_BLAS_THREADS", "1")


def pinned(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """`env` (default: this process's) for a worker process: every BLAS variable DNI_BLAS_THREADS, or 1.

    Set, not defaulted: a thread count meant for the parent (a user's OMP_NUM_THREADS, a
    cluster's) must not reach workers that share the machine's cores.
    """
    env = os.environ if env is None else env
    return {**env, **dict.fromkeys(VARIABLES, threads(env))}


# Two processes x two OpenBLAS threads on two cores ran 11-24x slower than 2 x 1 here:
# every worker shares the machine, so one thread each unless the user asks otherwise. This
# process keeps a BLAS variable set for it explicitly (benchmarks time several counts).
if "numpy" in sys.modules:  # too late to take effect: say so rather than silently oversubscribe
    print("warning: numpy imported before workers.runtime.blas; BLAS threads not pinned", file=sys.stderr)
for _var in VARIABLES:
    os.environ.setdefault(_var, threads(os.environ))
