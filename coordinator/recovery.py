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
    """Wait for the workers, assign the roles (with `states`, a checkpoint's, if any) and train; returns the summary.

    When workers are lost, up to --max-restarts of them: the survivors drop their roles and rejoin,
    then (only then) new workers are admitted for the lost stages: `spawn(stage)` starts one here,
    else one must register within --rejoin-timeout. Every stage then starts from the same
    checkpoint, and the epoch loop from its position: no stage ever mixes two checkpoints. A stage
    lost while a restart is under way joins that restart; a local worker that exits before it
    registers is lost like any other, at the start too.
    """
    # The budget is this launch's (a run resumed after it ran out gets --max-restarts again);
    # pos.restarts counts the whole run's.
    cfg, used, lost, noticed = plan.cfg, 0, set(), None   # noticed: when the restart under way began
    while True:
        try:
            if lost:
                replace(plan, members, rejoin, lost, spawn, stop)
            elif not members.assigned:
                register(members, spawn is not None, stop)
            if noticed is not None:
                metrics.rewind(pos.step)
            # The first batch and evaluation ids: the workers' id windows begin there, not at 0.
            members.assign(plan.roles(), plan.wire.to_meta(), plan.links(), states, pipe.first_id(pos.step),
                           pipe.eval_start)
            if noticed is not None:
                log.warning("restart %d: training again from step %d, %.2f s after the loss was noticed",
                            used, pos.step, time.monotonic() - noticed)
                noticed = None
            return epochs.train(plan, pipe, run_dir, metrics, progress, pos, stop)
        except WorkerFailed:   # a worker's own error, or non-finite numbers: a restart would do it again
            raise
        except WorkerLost as exc:
            if exc.stage is None or used >= cfg.max_restarts:
                raise WorkerLost(f"{exc}; the run stops after {used} restart(s) "
                                 f"(--max-restarts {cfg.max_restarts})", exc.stage) from None
            lost.add(exc.stage)
            used, pos.restarts = used + 1, pos.restarts + 1
            during = f" (while waiting for {exc.during})" if getattr(exc, "during", "") else ""
            if not members.assigned or noticed is not None:   # nothing trained since: nothing to go back from
                log.warning("%s%s; restart %d of %d: a new worker takes its place %s", exc, during, used,
                            cfg.max_restarts, "in the restart under way" if members.assigned else "before training")
                continue
            noticed, at = time.monotonic(), pos.step
            pos, states = rollback(plan, run_dir, pos)
            progress.at(pos)
            pipe.reset()
            log.warning("%s%s; restart %d of %d: every stage goes back from step %d to %s", exc, during,
                        used, cfg.max_restarts, at, f"the checkpoint at step {pos.step}" if states else "the start")


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
    back.restarts = pos.restarts   # the run's count goes on: the checkpoint's is older
    plan.restore_curriculum(back.curriculum)
    return back, states


def register(members: Membership, local: bool, stop: StopSignals) -> None:
    """Wait for every worker at the start (local ones within the registration timeout, others as long as it takes)."""
    members.register(liveness.REGISTER_TIMEOUT_S if local else None, stop=lambda: bool(stop))
    if stop:
        raise Interrupted(stop.signum, None, None)


def replace(plan: Plan, members: Membership, rejoin: Rejoin, lost: set[int], spawn: Callable | None,
            stop: StopSignals) -> None:
    """Reset the survivors and wait for them and a worker for each lost stage to register.

    `lost` is emptied once each of its stages has its new worker started (or, without spawn, its
    place free): a stage lost meanwhile raises WorkerLost, and the next call adds only its own."""
    who = " and ".join(title(plan.roles()[k - 1], k) for k in sorted(lost))
    rejoin.reset(lost)
    for stage in sorted(lost) if spawn is not None else ():
        members.procs[stage] = spawn(stage)
    lost.clear()
    timeout = liveness.REGISTER_TIMEOUT_S if spawn is not None else plan.cfg.rejoin_timeout
    try:
        rejoin.wait(timeout, f"a worker to take the place of {who}", stop=lambda: bool(stop))
    except TimeoutError as exc:
        raise WorkerLost(f"{who} lost, and {exc}", None) from None
    if stop:
        raise Interrupted(stop.signum, None, None)
