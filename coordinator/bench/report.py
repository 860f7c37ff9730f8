"""What every benchmark reports besides its figures: the machine it ran on, and targets met or missed."""
from __future__ import annotations

import ctypes
import os
import platform
import warnings

from coordinator.bench import procfs
from workers.runtime import blas

BLAS_ENV = (*blas.VARIABLES, "OPENBLAS_CORETYPE")   # the threads pinned, and the kernel the environment may force


def _openblas() -> dict:
    """The kernel OpenBLAS picked and the threads it uses, asked of the loaded library itself."""
    out = {}
    for path in procfs.mapped_libraries("openblas"):
        lib = ctypes.CDLL(path)
        for key, names, restype in (("kernel", ("scipy_openblas_get_corename64_", "openblas_get_corename64_",
                                                "openblas_get_corename"), ctypes.c_char_p),
                                    ("threads", ("scipy_openblas_get_num_threads64_", "openblas_get_num_threads64_",
                                                 "openblas_get_num_threads"), ctypes.c_int)):
            fn = next((getattr(lib, n) for n in names if hasattr(lib, n)), None)
            if fn is not None:
                fn.restype = restype
                value = fn()
                out[key] = value.decode() if isinstance(value, bytes) else value
    return out


def machine() -> dict:
    """What a figure depends on: cores, BLAS build, kernel and threads, ZeroMQ versions, load."""
    import numpy as np
    import zmq

    with warnings.catch_warnings():  # numpy nags about pyyaml when asked for its config
        warnings.simplefilter("ignore")
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    return {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "numpy": np.__version__,
            "blas": {"name": blas.get("name"), "version": blas.get("version"),
                     "config": blas.get("openblas configuration"), **_openblas()},
            "env": {k: os.environ.get(k) for k in BLAS_ENV},
            "pyzmq": zmq.__version__, "libzmq": zmq.zmq_version(),
            "load_average": list(os.getloadavg())}


def describe(m: dict) -> str:
    b = m["blas"]
    env = " ".join(f"{k}={v}" for k, v in m["env"].items() if v is not None)
    return (f"machine: {m['cpus']} cpus, {m['platform']}, python {m['python']}, numpy {m['numpy']}\n"
            f"  BLAS {b['name']} {b['version']} kernel {b.get('kernel', '?')} threads {b.get('threads', '?')}"
            f" ({env})\n"
            f"  pyzmq {m['pyzmq']} libzmq {m['libzmq']}  "
            f"load average {' '.join(f'{x:.2f}' for x in m['load_average'])}")


def target(name: str, value: float, op: str, limit: float) -> dict:
    ok = value <= limit if op == "<=" else value >= limit
    return {"name": name, "value": value, "op": op, "limit": limit, "pass": bool(ok)}


def print_targets(targets: list[dict]) -> None:
    print("\ntargets")
    for t in targets:
        print(f"  {'pass' if t['pass'] else 'MISS'}  {t['name']}: {t['value']:.3g} (want {t['op']} {t['limit']:g})")
