"""`dni top RUN_DIR [--once]`: its options, and the command."""
from __future__ import annotations

from pathlib import Path

from coordinator.top import live, snapshot, view


def cmd_top(args) -> int:
    run_dir = Path(args.run_dir)
    if args.once:
        print(view.plain(snapshot.read(run_dir)), end="")
        return 0
    return live.watch(run_dir)


def add_parser(sub) -> None:
    p = sub.add_parser("top", help="watch a running job: each stage's state, rates and latencies, the bottleneck",
                       description="A live view of the job whose run directory is RUN_DIR, refreshed every second "
                       "(q or Ctrl-C quits), from the status its coordinator writes there; on the coordinator's host.")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--once", action="store_true", help="print one plain-text snapshot and exit (a finished run: "
                   "its final state)")
    p.set_defaults(func=cmd_top)

