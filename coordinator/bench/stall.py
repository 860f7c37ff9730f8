"""`dni bench stall`: a feed-forward job with one stage stalled partway through, against the same job unstalled.

A row is a name and the `dni run` flags that make it. Each row trains twice, with the same seed:
unstalled, and with stage --stage stalled for --seconds once the head has trained --at of the
batches, either stopped (SIGSTOP, then SIGCONT; shorter than its liveness bound, so it is not
declared dead) or slowed to --share of a core by a CFS quota (root). The unstalled run is
measured over the same window, from the same batch. A row whose flags `dni run` refuses (an
option another branch brings) is said so in one line, and the other rows go on.
"""
from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
import tempfile
from pathlib import Path

from coordinator.bench import racejob, report, stallboard, stalljob
from coordinator.config import Config
from coordinator.data.tasks import image_task
from coordinator.lists import parse
from protocol import liveness

ROWS = [
    ("dni", "--mode dni"),
    ("cdni", "--mode cdni"),
    ("backprop", "--mode backprop"),
    ("cdni-synthetic-inputs", "--mode cdni --synthetic-inputs --run-ahead 1024"),
]
HOWS = ("sigstop", "quota")


def add_parser(kinds) -> argparse.ArgumentParser:
    st = kinds.add_parser("stall", help="update rates and accuracy of dni, cdni, backprop when one stage stalls "
                          "(SIGSTOP, or a CPU quota: root)", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    st.add_argument("--rows", default=",".join(name for name, _ in ROWS), help="the rows to run, by name")
    st.add_argument("--stages", type=int, default=4, help="stages of the network (hidden layers + head)")
    st.add_argument("--stage", type=int, default=2, help="the stage to stall")
    st.add_argument("--seconds", type=float, default=10.0, help="how long the stall lasts")
    st.add_argument("--at", type=float, default=0.5, help="the stall begins once the head has trained this "
                    "fraction of the job's batches")
    st.add_argument("--how", choices=HOWS, default="sigstop", help="sigstop: the worker stopped, then continued; "
                    "quota: its process slowed to --share of a core (CFS quota, needs root)")
    st.add_argument("--share", type=float, default=0.05, help="--how quota: the cores the stalled stage gets")
    st.add_argument("--heartbeat", type=float, default=6.0, help="the jobs' --heartbeat: with sigstop, a stall "
                    f"may last at most {liveness.MISSED_HEARTBEATS - 1} intervals")
    st.add_argument("--epochs", type=int, default=Config.epochs, help="epochs of every job")
    st.add_argument("--eval-every", type=int, default=100, help="training batches between evaluations")
    st.add_argument("--width", type=int, default=256, help="hidden layer width")
    st.add_argument("--batch", type=int, default=Config.batch_size, help="batch size")
    st.add_argument("--data", help="MNIST directory (default: the generated task)")
    st.add_argument("--train-subset", type=int, default=0, help="train on the first N examples only (0: all)")
    st.add_argument("--keep", metavar="DIR", help="keep every job's run directory and log here")
    return st


def params(args) -> dict:
    """The bench's settings, or a ValueError naming what is wrong."""
    if args.stages < 2:
        raise ValueError(f"--stages {args.stages}: a network of at least 2 stages")
    if not 1 <= args.stage <= args.stages:
        raise ValueError(f"--stage {args.stage}: out of range, the stages are 1..{args.stages}")
    if not args.seconds > 0:
        raise ValueError(f"--seconds {args.seconds:g}: a stall lasts more than 0 seconds")
    if not 0 < args.at < 1:
        raise ValueError(f"--at {args.at:g}: a fraction of the batches, above 0 and below 1")
    if not liveness.MIN_HEARTBEAT_S <= args.heartbeat <= liveness.MAX_HEARTBEAT_S:
        raise ValueError(f"--heartbeat {args.heartbeat:g}: between {liveness.MIN_HEARTBEAT_S:g} and "
                         f"{liveness.MAX_HEARTBEAT_S:g} seconds")
    # A worker may have been silent for up to an interval when it is stopped: it stays alive only if
    # the stall ends an interval before the liveness bound.
    longest = (liveness.MISSED_HEARTBEATS - 1) * args.heartbeat
    if args.how == "sigstop" and args.seconds > longest:
        raise ValueError(f"--seconds {args.seconds:g}: a worker stopped that long would be declared dead (liveness "
                         f"bound {liveness.MISSED_HEARTBEATS} x --heartbeat {args.heartbeat:g} s): at most "
                         f"{longest:g} s, or a longer --heartbeat")
    if not 0 < args.share <= 1:
        raise ValueError(f"--share {args.share:g}: a share of one core, above 0 and at most 1")
    if min(args.epochs, args.eval_every, args.width, args.batch) < 1 or args.train_subset < 0:
        raise ValueError("--epochs, --eval-every, --width, --batch must be positive, --train-subset not negative")
    known = dict(ROWS)
    picked = parse(args.rows, "--rows", str, choices=tuple(known), required=True)
    return {"rows": {name: known[name] for name in dict.fromkeys(picked)}, "stages": args.stages,
            "stage": args.stage, "seconds": args.seconds, "at": args.at, "how": args.how, "share": args.share,
            "heartbeat": args.heartbeat, "epochs": args.epochs, "eval_every": args.eval_every, "width": args.width,
            "batch": args.batch, "data": args.data, "train_subset": args.train_subset, "seed": args.seed}


def quota_refusal(share: float) -> str | None:
    """Why a CPU quota cannot be set here (None: it can): a group made and removed at once tells."""
    if os.geteuid() != 0:
        return "--how quota needs root: it makes a cgroup with a CFS quota"
    from coordinator.bench.netlab import shaping
    try:
        shaping.CpuQuota(f"dni-bench-stall-{os.getpid()}", share).remove()
    except (shaping.ShapingError, OSError) as exc:
        return f"--how quota: no CPU quota here ({exc})"
    return None


def total_steps(p: dict) -> int:
    """The batches of every job: its task's, as `dni run` builds it (the validation split held out)."""
    cfg = Config(data=p["data"] or "", eval_every=p["eval_every"], train_subset=p["train_subset"], seed=p["seed"])
    return image_task(cfg, None).steps_per_epoch(p["batch"]) * p["epochs"]


def run(args) -> dict:
    p = params(args)
    if p["how"] == "quota" and (why := quota_refusal(p["share"])):
        raise ValueError(why)
    p["total_steps"] = total_steps(p)
    common = racejob.common(racejob.Job("stall", (), p["stages"], 0.0), p)
    result = {"bench": "stall", "machine": report.machine(), "params": p, "runs": [], "refused": [], "failed": []}
    print(report.describe(result["machine"]))
    # A polite kill (SIGTERM) unwinds like Ctrl-C: the stalled worker continued, the job stopped.
    polite = signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        with tempfile.TemporaryDirectory(prefix="dni-bench-stall-") as tmp:
            where = Path(args.keep or tmp)
            where.mkdir(parents=True, exist_ok=True)
            for row, text in p["rows"].items():
                run_row(result, row, text, common, where)
    except KeyboardInterrupt:   # the job's teardown (stalljob.run) has continued the stalled worker and stopped it
        print("dni bench stall: interrupted; a stalled worker was continued first, and every job stopped",
              file=sys.stderr)
        raise SystemExit(130) from None
    finally:
        signal.signal(signal.SIGTERM, polite)
    result["compare"] = stallboard.compare(result["runs"], p["stage"])
    stallboard.print_tables(result)
    return result


def run_row(result: dict, row: str, text: str, common: list[str], where: Path) -> None:
    """A row's two jobs, unstalled then stalled; a row `dni run` refuses is said so, once."""
    p, flags = result["params"], tuple(shlex.split(text))
    for stalled in (False, True):
        name = stallboard.RUNS[stalled]
        stall = (stalljob.SigStop() if p["how"] == "sigstop" else stalljob.CpuSlow(p["share"])) if stalled \
            else stalljob.Stall()
        try:
            job = stalljob.run(flags, common, p, where / f"{row}-{name}", stall)
        except stalljob.Refused as exc:
            result["refused"].append({"row": row, "flags": list(flags), "error": str(exc)})
            print(f"dni bench stall: row {row} not run: dni run refused '{text}': {exc}", flush=True)
            return
        except (RuntimeError, OSError) as exc:
            result["failed"].append({"row": row, "run": name, "error": str(exc)})
            print(f"dni bench stall: {row} ({name}) failed: {exc}", flush=True)
            continue
        result["runs"].append(stallboard.figures(row, flags, stalled, job, p["stages"]))
        stallboard.print_run(result["runs"][-1])
