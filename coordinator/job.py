"""One training job as coordinator: bind, start or await the workers, train, summarise, clean up."""
from __future__ import annotations

import logging
import shlex
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Iterator

import zmq

from coordinator import checkpoint, config, eventfiles, launch, recovery, rundir
from coordinator.control import FlushedPipeline, Hub, Membership, Pipeline, Rejoin, UnlockedPipeline, WorkerLost
from coordinator.metrics import MetricsLog, Progress
from coordinator.plans import Plan
from coordinator.position import Position
from coordinator.signals import Interrupted, StopSignals
from coordinator.status import Status
from protocol import descriptors, liveness

log = logging.getLogger("dni")


@contextmanager
def run_dir_for(cfg: config.Config, resuming: bool = False) -> Iterator[Path]:
    """The run directory, made and claimed for the with-block (see rundir.claimed); one that holds a run
    already is refused unless the user says to reuse it: --overwrite, or --resume (which continues it)."""
    path = Path(cfg.out or f"runs/{cfg.mode}-{time.strftime('%Y%m%d-%H%M%S')}")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:   # a file there, or on the way there; no permission
        raise config.ConfigError(f"--out {path}: cannot make the run directory ({exc.strerror})") from None
    with rundir.claimed(path):
        held = [name for name in rundir.RUN_FILES if (path / name).exists()]
        if held and not (cfg.overwrite or resuming):
            raise config.ConfigError(f"--out {path} already holds a run ({held[0]}): give another --out, "
                                     f"--resume {path} to continue it, or --overwrite to replace it")
        yield path


def announce(run_dir: Path, cfg: config.Config) -> None:
    """Where to look while the run goes on (stderr: stdout is the summary's)."""
    where = shlex.quote(str(run_dir))
    lines = [f"run directory {where}", f"watch it:     dni top {where}"]
    if cfg.tensorboard:
        lines.append(f"curves:       tensorboard --logdir {shlex.quote(str(run_dir / 'tensorboard'))}")
    print("\n".join(lines), file=sys.stderr, flush=True)


def start(plan: Plan, resume: checkpoint.Checkpoint | None) -> tuple[Position, dict]:
    """Where training starts, and the states the workers start from: a checkpoint's, or none."""
    if resume is None:
        return Position.fresh(plan), {}
    pos = Position.saved(resume.progress)
    pos.resumes += 1
    pos.config = asdict(plan.cfg)   # the options it now runs with (--epochs may have grown)
    plan.restore_curriculum(pos.curriculum)
    return pos, resume.states


def serve(plan: Plan, bind: str, spawn_local: bool, curve: dict | None = None,
          resume: checkpoint.Checkpoint | None = None) -> dict:
    """Run one training job as coordinator; with spawn_local, start the workers here too (and their
    replacements). `curve` (see Hub) puts CURVE on every socket of the run; `resume`
    continues a run from its checkpoint. Interrupted, a final WorkerLost and a stall carry `run_dir`.
    """
    if plan.cfg.tensorboard:
        eventfiles.require()   # before the run directory is made: a missing extra is a one-line error
    descriptors.raise_limit()   # the control socket listens: room for strangers' connections besides the run's own
    # The signals' handler before the run directory is made: a SIGTERM while the run starts (its files made, its
    # workers registering) then stops it as one in training does, exit 143, instead of killing it outright.
    with StopSignals() as stop, run_dir_for(plan.cfg, resuming=resume is not None) as run_dir:
        return serve_in(run_dir, plan, bind, spawn_local, curve, resume, stop)


def serve_in(run_dir: Path, plan: Plan, bind: str, spawn_local: bool, curve: dict | None,
             resume: checkpoint.Checkpoint | None, stop: StopSignals) -> dict:
    """serve, in its run directory, claimed, under the stop signals' handler."""
    cfg, n_workers = plan.cfg, plan.n_workers
    pos, states = start(plan, resume)
    board = eventfiles.Board(run_dir, plan.roles()) if cfg.tensorboard else None
    metrics = MetricsLog(run_dir, since=pos.step if resume else None, board=board)
    progress = Progress(cfg.progress, plan.total_steps)
    progress.at(pos)
    ctx = zmq.Context()
    hub = Hub(ctx, bind, cfg.heartbeat, curve=curve)
    announce(run_dir, cfg)   # (once bound: a run that cannot start says only why)
    members = Membership(hub, n_workers)
    members.run = run_dir.resolve().name
    rejoin = Rejoin(members)
    flushed = {"micro_batches": cfg.micro_batches} if cfg.mode == "gpipe" else {}
    status = Status(run_dir, plan, members, progress)
    liveness_sweep = hub.sweep

    def sweep() -> None:   # the status file is rewritten between liveness sweeps, at most once a second
        liveness_sweep()
        status.tick()
    hub.sweep = sweep

    def on_metrics(stage: int, records: list) -> None:
        metrics.write(stage, records)
        status.on_records(stage, records)
    unlocked = {"inputs": plan.inputs, "ahead": plan.ahead()} if cfg.synthetic_inputs else {}
    pipe = (FlushedPipeline if flushed else UnlockedPipeline if unlocked else Pipeline)(
        hub, members, plan.window(), plan.split, on_metrics=on_metrics, on_done=progress.on_done,
        path=plan.path(), max_records=plan.wire.log_every, stall=cfg.stall_timeout, credit=plan.wire.credit,
        **flushed, **unlocked)
    at_once = False   # Ctrl-C twice: kill the workers, wait for nothing
    try:
        if spawn_local:
            members.procs = launch.spawn(hub.endpoint, n_workers)
        log.info("coordinator at %s waiting for %d workers", hub.endpoint, n_workers)
        spawn = (lambda stage: launch.spawn_one(hub.endpoint, stage)) if spawn_local else None
        summary = recovery.train(plan, members, rejoin, pipe, run_dir, metrics, progress, pos, states, stop, spawn)
        summary["workers"] = {str(k): v for k, v in members.stop().items()}
        summary["dropped"] = dict(hub.drops.counts)   # by the coordinator; each worker's are in its own
        checkpoint.write_json(run_dir / "summary.json", summary)
        summary["run_dir"] = str(run_dir)
        return summary
    except KeyboardInterrupt:
        at_once = True
        raise
    except (Interrupted, WorkerLost, TimeoutError) as exc:   # a stall too: the checkpoint is good
        exc.run_dir = run_dir
        raise
    finally:
        ending = sys.exc_info()[1]   # the exception on its way out, if any: how the run ended
        aborted = not members.stopping
        try:
            if aborted and not at_once:
                members.stop(timeout=liveness.ABORT_STOP_TIMEOUT_S)
        except KeyboardInterrupt:   # Ctrl-C again while they were stopping
            at_once = True
        pipe.close()
        hub.close()
        launch.reap(members.procs.values(), liveness.ABORT_REAP_TIMEOUT_S if aborted else liveness.REAP_TIMEOUT_S,
                    at_once=at_once)
        metrics.close()
        ctx.term()
        status.end(ending)


def print_summary(summary: dict, plan: Plan) -> None:
    print(f"mode {summary['mode']}  stages {summary['stages']}  dataset {summary['dataset']}")
    print(f"test accuracy {summary['test_accuracy']:.4f}  train {summary['train_seconds']:.1f} s  "
          f"{summary['samples_per_second']:,.0f} samples/s")
    for stage, lat in summary["update_latency_ms"].items():
        print(f"  stage {stage} update latency p50 {lat['p50']:.3f} ms  p99 {lat['p99']:.3f} ms")
    for line in plan.describe(summary):
        print(line)
    if summary["resumes"] or summary["restarts"]:
        print(f"resumed {summary['resumes']} time(s), {summary['restarts']} lost worker(s) replaced")
    print(f"run directory {summary['run_dir']}")
