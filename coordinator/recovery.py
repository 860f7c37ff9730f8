"""Worker restarts: a lost worker is replaced, and every stage restarts from the run's last checkpoint."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable

from coordinator import checkpoint, epochs
from coordinator.control import Membership, Pipeline, Rejoin, WorkerFailed, WorkerLost
from coordinator.metrics import MetricsLog, Progress
from coordinator.plans import Plan
from coordinator.signals import Interrupted, StopSignals
from protocol import liveness
from protocol.roles import title

log = logging.getLogger("dni")


def train(plan: Plan, members: Membership, rejoin: Rejoin, pipe: Pipeline, run_dir: Path, metrics: MetricsLog,
          progress: Progress, pos: epochs.Position, states: dict, stop: StopSignals, spawn: Callable | None) -> dict:
    """Assign the roles (with `states`, a checkpoint's, if any) and train; returns the summary.

    When a worker is lost, up to --max-restarts times: the survivors drop their roles and rejoin,
    then (only then) a new worker is admitted for the lost stage: `spawn(stage)` starts it here,
    else one must register within --rejoin-timeout. Every stage then starts from the same
    checkpoint, and the epoch loop from its position: no stage ever mixes two checkpoints.
    """
    # The budget is this launch's (a run resumed after it ran out gets --max-restarts again);
    # pos.restarts counts the whole run's.
    cfg, used, lost, noticed = plan.cfg, 0, None, 0.0
    while True:
        try:
            if lost is not None:
                replace(plan, members, rejoin, lost, spawn, stop)
                metrics.rewind(pos.step)
            # The first batch and evaluation ids: the workers' id windows begin there, not at 0.
            members.assign(plan.roles(), plan.wire.to_meta(), plan.links(), states, pos.step, pipe.eval_start)
            if lost is not None:
                log.warning("restart %d: training again from step %d, %.2f s after the loss was noticed",
                            used, pos.step, time.monotonic() - noticed)
            return epochs.train(plan, pipe, run_dir, metrics, progress, pos, stop)
        except WorkerFailed:   # a worker's own error, or non-finite numbers: a restart would do it again
            raise
        except WorkerLost as exc:
            if exc.stage is None or used >= cfg.max_restarts:
                raise WorkerLost(f"{exc}; the run stops after {used} restart(s) "
                                 f"(--max-restarts {cfg.max_restarts})", exc.stage) from None
            lost, noticed, used, at, total = exc, time.monotonic(), used + 1, pos.step, pos.restarts + 1
            pos, states = rollback(plan, run_dir, pos)
            pos.restarts = total
            progress.steps = pos.step
            pipe.reset()
            log.warning("%s%s; restart %d of %d: every stage goes back from step %d to %s", exc,
                        f" (while waiting for {exc.during})" if getattr(exc, "during", "") else "",
                        used, cfg.max_restarts, at,
                        f"the checkpoint at step {pos.step}" if states else "the start")


def rollback(plan: Plan, run_dir: Path, pos: epochs.Position) -> tuple[epochs.Position, dict]:
    """This run's last checkpoint (position, states), or its very start if it has none yet."""
    try:
        found = checkpoint.latest(run_dir)
    except (FileNotFoundError, ValueError):
        found = None
    if found is not None and found.progress is not None and found.progress["run_id"] == pos.run_id:
        back, states = epochs.Position.saved(found.progress), found.states
    else:
        back, states = epochs.Position.fresh(plan, pos.run_id), {}
        back.resumes = pos.resumes
    plan.restore_curriculum(back.curriculum)
    return back, states


def replace(plan: Plan, members: Membership, rejoin: Rejoin, lost: WorkerLost, spawn: Callable | None,
            stop: StopSignals) -> None:
    """Reset the survivors and wait for them and a worker for the lost stage to register."""
    stage = lost.stage
    rejoin.reset(stage)
    if spawn is not None:
        members.procs[stage] = spawn(stage)
    timeout = liveness.REGISTER_TIMEOUT_S if spawn is not None else plan.cfg.rejoin_timeout
    who = title(plan.roles()[stage - 1], stage)
    try:
        rejoin.wait(timeout, f"a worker to take the place of {who}", stop=lambda: bool(stop))
    except TimeoutError as exc:
        raise WorkerLost(f"{lost}, and {exc}", None) from None
    if stop:
        raise Interrupted(stop.signum, None, None)
