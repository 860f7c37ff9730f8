"""What a plan is: how one model is laid out over worker processes, configured and fed."""
from __future__ import annotations

import numpy as np

from coordinator.config import Config
from coordinator.control import to_stage_one
from coordinator.data import Task
from protocol import window
from protocol.wireconfig import WireConfig


class Plan:
    """Everything the epoch loop, the job and `dni eval` need to know about a model, and no more.

    A subclass names its roles and links, the wire fields it derives, how a batch is split among
    the stages the coordinator feeds, and what it adds to the summary; it may grow its task
    between epochs (a curriculum).
    """
    model = ""

    def __init__(self, cfg: Config, task: Task):
        self.cfg, self.task = cfg, task
        self.total_steps = task.steps_per_epoch(cfg.batch_size) * cfg.epochs
        self.wire_fields = {**cfg.listed("wire"), "credit": self.credit(), "total_steps": self.total_steps,
                            "cache": window.in_flight(self.window() + self.ahead()), **self.derived_fields()}
        self.wire = WireConfig.from_meta(self.wire_fields)   # typed and checked: sent in ASSIGN

    @classmethod
    def load_task(cls, cfg: Config, eval_length: int | None = None) -> Task:
        """The task this model trains on for `cfg` (eval_length: where a saved curriculum stood)."""
        raise NotImplementedError

    @staticmethod
    def eval_batch(cfg: Config) -> int:
        """Examples in one evaluation message: --eval-batch."""
        return cfg.eval_batch

    def credit(self) -> str:
        """How the credit window is held: --credit (link, coordinator)."""
        return self.cfg.credit

    def window(self) -> int:
        """The coordinator's credit window: --window."""
        return self.cfg.window

    def ahead(self) -> int:
        """Batches fed to the stages above the first before stage 1 takes them (--run-ahead): none but with
        --synthetic-inputs, the one time a stage keeps more in flight than the window."""
        return 0

    @property
    def n_workers(self) -> int:
        return len(self.roles())

    def derived_fields(self) -> dict:
        """This model's wire fields derived from the data or from more than one option (protocol.wireconfig.DERIVED)."""
        raise NotImplementedError

    def roles(self) -> list[str]:
        """roles[k - 1]: what worker k does."""
        return self.roles_for(self.cfg)

    @staticmethod
    def roles_for(cfg: Config) -> list[str]:
        """The roles from the config alone, before any data is loaded (a Slurm job's task count)."""
        raise NotImplementedError

    def links(self) -> dict[int, dict[str, int | None]]:
        """links[k] = {side: stage or None}: whom worker k sends to."""
        raise NotImplementedError

    def path(self) -> list[int]:
        """The stages a batch crosses, in order; the last reports it to the coordinator."""
        return list(range(1, self.n_workers + 1))

    def split(self, x: np.ndarray, y: np.ndarray) -> dict[int, dict[str, np.ndarray]]:
        """The input split: which stage the coordinator feeds which part of a batch."""
        return to_stage_one(x, y)

    def after_epoch(self, entry: dict, last: bool) -> str:
        """The curriculum hook, after an epoch's evaluation: may add to its history entry and grow
        the task; returns what to add to the epoch's progress line."""
        return ""

    def curriculum(self) -> dict:
        """Where the curriculum stands, saved with every checkpoint (JSON)."""
        return {}

    def restore_curriculum(self, saved: dict) -> None:
        """Put the curriculum back where a checkpoint had it."""

    def checkpoint_config(self) -> dict:
        """The config saved with every checkpoint (config.json): enough to rebuild and test it."""
        return {**self.wire_fields, **self.cfg.listed("saved"), "dataset": self.task.name}

    def summary_fields(self) -> dict:
        """What summary.json says of the model, besides what every run says."""
        return self.cfg.listed("summary")

    def describe(self, summary: dict) -> list[str]:
        """The model's own lines of the printed summary."""
        return []

    @staticmethod
    def build_stage(wire: WireConfig, stage: int):
        """Stage `stage`'s numerics, fresh: what its part of a checkpoint must match (names, shapes, dtypes)."""
        raise NotImplementedError

    @classmethod
    def evaluate_checkpoint(cls, saved: dict, states: dict[int, dict], data: str) -> tuple[float, int]:
        """(test accuracy, examples) of a saved run, in this one process; data overrides the saved MNIST path."""
        raise NotImplementedError
