"""The `dni` command's entry point: `dni worker` goes straight to the worker, every other command to the CLI."""
from __future__ import annotations

import sys

VERBOSE = ("-v", "--verbose")


def main(argv: list[str] | None = None) -> int:
    """Dispatch on the subcommand before importing anything: a worker loads only protocol/ and workers/,
    not the coordinator's application (its CLI, benchmarks, Slurm and plotting code)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    flags = 0
    while flags < len(argv) and argv[flags] in VERBOSE:   # the only option `dni` takes before its command
        flags += 1
    if argv[flags:flags + 1] == ["worker"]:
        from workers.cli import main as worker
        return worker(argv[flags + 1:], verbose=flags > 0)
    from coordinator.cli import main as dni
    return dni(argv)
