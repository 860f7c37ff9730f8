"""`dni worker` and `python -m workers`: the worker's options, and the one function every worker process runs."""
from __future__ import annotations

import workers.runtime.blas  # noqa: F401  (first: pins BLAS threads before numpy loads)

# isort: split

import argparse
import logging
import sys

from protocol import keys
from workers.roles import worker
from workers.runtime.allocator import keep_freed_memory


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--coordinator", required=True, metavar="ENDPOINT", help="e.g. tcp://HOST:5555")
    parser.add_argument("--advertise", metavar="HOST", help="address neighbours reach this worker at "
                        "(default: the one that routes to the coordinator)")
    parser.add_argument("--stage", type=int, help="ask for this stage (default: next free)")
    parser.add_argument("--key", metavar="SECRET_FILE", help="this worker's worker-N.key_secret (with --server-key)")
    parser.add_argument("--server-key", metavar="FILE", help="the coordinator's public coordinator.key")
    parser.add_argument("--insecure", action="store_true", help="run without keys on a non-loopback address")


def curve(key: str | None, server_key: str | None, insecure: bool) -> dict | None:
    """The worker's `curve` argument: its own keypair, and the same keypair as client of the coordinator."""
    if (key is None) != (server_key is None):
        raise ValueError("--key and --server-key go together: this worker's secret file and coordinator.key")
    if key is None:
        return None
    if insecure:
        raise ValueError("--key and --insecure contradict each other; pick one")
    own = keys.load_client(key)
    return {"own": own, "client": (*own, keys.load_public(server_key))}


def run(args: argparse.Namespace) -> int:
    """Serve a stage with these options until the run ends; the process's exit code."""
    keypairs = curve(args.key, args.server_key, args.insecure)
    return worker.run(args.coordinator, args.advertise, args.stage, curve=keypairs, insecure=args.insecure)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dni worker", description="Join a run: register with a coordinator and serve "
                                "a stage. Local runs start their workers with this very command.")
    add_arguments(p)
    return p


def main(argv: list[str] | None = None, verbose: bool = False) -> int:
    """A worker process from start to exit, loading none of the coordinator's modules; `verbose`: `dni -v worker`."""
    keep_freed_memory()  # no page-fault churn on the hot path (workers/runtime/allocator.py)
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(name)s: %(message)s")
    try:
        return run(args)
    except (FileNotFoundError, ValueError) as exc:   # a missing or malformed key file, contradicting flags
        print(f"dni: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:   # an unreadable key file
        print(f"dni: error: {exc.strerror or exc}: {exc.filename or ''}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:   # before the worker's loop, which handles its own
        return 130
