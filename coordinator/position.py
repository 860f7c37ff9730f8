"""Where a run stands at a checkpoint: everything but the workers' arrays, saved as its progress."""
from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from coordinator.plans import Plan


@dataclass
class Position:
    """Where a run stands: at a checkpoint, everything but the workers' arrays."""
    run_id: str                  # a restart reloads only this run's checkpoints, never a stranger's
    config: dict                 # the run's options (coordinator/config.py), for --resume
    step: int = 0                # training batches done, over the whole run
    epoch: int = 0               # epochs done: trained and evaluated
    batch: int = 0               # batches done of the epoch after those
    rng: dict | None = None      # the shuffling RNG's state when that epoch began
    history: list = field(default_factory=list)
    samples: int = 0
    train_seconds: float = 0.0
    restarts: int = 0            # lost workers replaced, over the whole run
    resumes: int = 0             # times the run was continued with --resume
    checkpoints: int = 0         # written during training (the end's aside), and the seconds they took:
    checkpoint_seconds: float = 0.0   # the cadence's cost
    curriculum: dict = field(default_factory=dict)   # the plan's (the Copy task's length)

    @classmethod
    def fresh(cls, plan: Plan, run_id: str | None = None) -> "Position":
        return cls(run_id or uuid.uuid4().hex, asdict(plan.cfg), curriculum=plan.curriculum(),
                   rng=np.random.default_rng(plan.cfg.seed).bit_generator.state)

    @classmethod
    def saved(cls, progress: dict) -> "Position":
        return cls(**progress)
