"""The `dni` command: run, coordinator, worker, eval, top (and bench, keys, plot, slurm)."""
from __future__ import annotations

import workers.runtime.blas  # noqa: F401  (first: pins BLAS threads before numpy loads)

# isort: split

import argparse
import logging
import os
import secrets
import sys
import tempfile
import zipfile
from contextlib import nullcontext
from pathlib import Path

from coordinator import checkpoint, config, plans, rundir, runplot, security, slurm
from coordinator.bench import cli as bench
from coordinator.control import WorkerLost
from coordinator.data import DataError
from coordinator.job import print_summary, serve
from coordinator.signals import Interrupted
from coordinator.top import cli as top
from workers import cli as worker_cli


def prepare(args) -> tuple[plans.Plan, checkpoint.Checkpoint | None]:
    """The plan from the flags, or with --resume from the run's saved options and its last checkpoint."""
    if not args.resume:
        return plans.for_config(config.from_args(args)), None
    found = checkpoint.latest(Path(args.resume))
    if found.progress is None:
        raise config.ConfigError(f"--resume {args.resume}: {found.path} predates resumable checkpoints "
                                 "(no training progress in it); `dni eval` can still test it")
    cfg = config.resumed(found.progress["config"], args, args.resume)
    if found.progress["epoch"] >= cfg.epochs:
        raise config.ConfigError(f"--resume {args.resume}: the run has done all its {cfg.epochs} epochs; "
                                 "give a larger --epochs to train on")
    return plans.for_config(cfg), found


def claim(args):
    """--resume's run directory, claimed before its checkpoint is read (serve claims a new run's itself);
    none that is not there: prepare says there is no checkpoint."""
    resumed = Path(args.resume or "")
    return rundir.claimed(resumed) if args.resume and resumed.is_dir() else nullcontext()


def cmd_run(args) -> int:
    args.resume_command = "dni run --resume {}"
    with claim(args):
        plan, resume = prepare(args)
        # Linux: an abstract-namespace endpoint, which is no file: nothing is left behind on any
        # exit, SIGKILL included. Only this user's processes may connect (protocol/sockets.py).
        abstract = sys.platform.startswith("linux")
        with nullcontext(None) if abstract else tempfile.TemporaryDirectory(prefix="dni-") as tmp:
            where = f"@dni-{os.getpid()}-{secrets.token_hex(8)}" if abstract else tmp
            summary = serve(plan, f"ipc://{where}/control", spawn_local=True, resume=resume)
    print_summary(summary, plan)
    return 0


def cmd_coordinator(args) -> int:
    security_flags = f" --keys {args.keys}" if args.keys else " --insecure" if args.insecure else ""
    args.resume_command = f"dni coordinator --resume {{}} --bind {args.bind} --workers {args.workers}{security_flags}"
    with claim(args):
        plan, resume = prepare(args)
        if args.workers != plan.n_workers:
            raise config.ConfigError(f"--workers {args.workers}: this network has {plan.n_workers} stages "
                                     f"(time boxes and parameter service for --model rnn), one worker each")
        curve = security.coordinator_curve(args.keys, args.insecure, args.bind)
        summary = serve(plan, args.bind, spawn_local=False, curve=curve, resume=resume)
    print_summary(summary, plan)
    return 0


def resume_hint(args, exc) -> str:
    """How to go on from where the run stopped: the last line a stopped run prints."""
    run_dir = getattr(exc, "run_dir", None)
    if run_dir is None:
        return ""
    if not any((run_dir / name).is_file() for name in (checkpoint.MODEL_FILE, checkpoint.PREVIOUS_FILE)):
        return f"; no checkpoint in {run_dir} yet: start the run again"
    return f"; resume with: {args.resume_command.format(run_dir)}"


def cmd_eval(args) -> int:
    path = Path(args.run_dir) / checkpoint.MODEL_FILE
    try:
        saved, states = checkpoint.load(Path(args.run_dir))
        accuracy, n = plans.for_checkpoint(saved).evaluate_checkpoint(saved, states, args.data)
    except (zipfile.BadZipFile, EOFError, KeyError, TypeError, IndexError, AttributeError) as exc:
        raise ValueError(f"{path} is truncated, corrupt or not this program's ({type(exc).__name__}: {exc})") from None
    print(f"test accuracy {accuracy:.4f} ({n} examples, checkpoint step {saved['step']})")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dni", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="train locally: a coordinator plus one worker process per stage")
    add_resume(run)
    config.add_arguments(run)
    run.set_defaults(func=cmd_run)
    coord = sub.add_parser("coordinator", help="serve a run to workers that connect over the network")
    coord.add_argument("--bind", default="tcp://127.0.0.1:5555", help="control endpoint (default: %(default)s)")
    coord.add_argument("--workers", type=int, required=True, help="how many workers to wait for")
    security.add_coordinator_arguments(coord)
    add_resume(coord)
    config.add_arguments(coord)
    coord.set_defaults(func=cmd_coordinator)
    # Listed here for --help; coordinator/entry.py sends `dni worker` to workers/cli.py without this module.
    work = sub.add_parser("worker", help="join a run: register with a coordinator and serve a stage")
    worker_cli.add_arguments(work)
    work.set_defaults(func=worker_cli.run)
    security.add_keys_command(sub)
    ev = sub.add_parser("eval", help="test accuracy of a run directory's checkpoint")
    ev.add_argument("run_dir", metavar="RUN_DIR")
    ev.add_argument("--data", help="MNIST directory (default: the one the run used)")
    ev.set_defaults(func=cmd_eval)
    bench.add_parser(sub)
    runplot.add_parser(sub)
    top.add_parser(sub)
    slurm.add_parser(sub)
    return p


def add_resume(p: argparse.ArgumentParser) -> None:
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run saved in RUN_DIR from its last checkpoint, "
                   "with its options (flags may add --epochs; see docs/failures.md)")


def main(argv=None) -> int:
    from workers.runtime.allocator import keep_freed_memory
    keep_freed_memory()  # every dni process (coordinator, worker, bench): no page-fault churn
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(name)s: %(message)s")
    try:
        return args.func(args)
    except (config.ConfigError, DataError, FileNotFoundError, ValueError) as exc:
        print(f"dni: error: {exc}", file=sys.stderr)
        return 2
    except Interrupted as exc:
        at = f" at step {exc.step}, checkpoint {exc.checkpoint}" if exc.checkpoint else ""
        print(f"dni: interrupted: {exc}{at}; workers stopped{resume_hint(args, exc)}", file=sys.stderr)
        return exc.exit_code
    except (WorkerLost, TimeoutError) as exc:
        print(f"dni: error: {exc}{resume_hint(args, exc)}", file=sys.stderr)
        return 1
    except OSError as exc:   # the run directory made read-only mid-run, a full disk, ...
        print(f"dni: error: {exc.strerror or exc}: {exc.filename or ''}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("dni: interrupted twice: stopped at once, workers killed, no new checkpoint", file=sys.stderr)
        return 130
