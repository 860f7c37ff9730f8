"""The feed-forward plan: a process per layer, the head last; the coordinator feeds stage 1."""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from coordinator.config import Config, ConfigError, from_saved
from coordinator.data.tasks import Task, image_task
from coordinator.plans.base import Plan
from protocol.roles import HEAD, LAYER
from protocol.wireconfig import WireConfig


class FeedForward(Plan):
    model = "ff"

    def __init__(self, cfg: Config, task: Task):
        super().__init__(cfg, task)
        tail = len(task.dataset.x_train) % cfg.batch_size
        if cfg.mode == "gpipe" and 0 < tail < cfg.micro_batches:
            raise ConfigError(f"--micro-batches {cfg.micro_batches}: each epoch's last batch has only {tail} "
                              f"examples ({len(task.dataset.x_train)} in all, --batch-size {cfg.batch_size})")

    @classmethod
    def load_task(cls, cfg: Config, eval_length: int | None = None) -> Task:
        return image_task(cfg, cfg.class_list(), centre=cfg.centre)

    def window(self) -> int:
        """--window; gpipe: a batch's micro-batches (the flush holds the rest); with pipedream under the
        coordinator's credit, the stages at least: stage 1's 1F1B limit."""
        if self.cfg.mode == "gpipe":
            return self.cfg.micro_batches
        if self.cfg.mode == "pipedream" and self.cfg.credit == "coordinator":
            return max(self.cfg.window, self.n_workers)
        return self.cfg.window

    def ahead(self) -> int:
        return self.cfg.run_ahead if self.cfg.synthetic_inputs else 0

    def inputs(self, x: np.ndarray, y: np.ndarray) -> dict[int, dict[str, np.ndarray]]:
        """--synthetic-inputs: a training batch's network input, as the data's own bytes, to every stage above
        the first (coordinator/control/unlocked.py)."""
        stored = self.task.dataset.as_stored(x)
        name = "pixels" if stored.dtype == np.uint8 else "x"
        return {k: {name: stored, "y": y} for k in range(2, self.n_workers + 1)}

    def sizes(self) -> list[int]:
        dataset = self.task.dataset
        return [dataset.n_features, *self.cfg.hidden_sizes(), dataset.n_classes]

    def derived_fields(self) -> dict:
        return {"sizes": self.sizes()}

    @staticmethod
    def roles_for(cfg: Config) -> list[str]:
        return [LAYER] * len(cfg.hidden_sizes()) + [HEAD]

    def links(self) -> dict[int, dict[str, int | None]]:
        return {k: {"prev": k - 1, "next": k + 1} for k in range(1, self.n_workers + 1)}

    def summary_fields(self) -> dict:
        sizes = self.sizes()
        gpipe = {"micro_batches": self.cfg.micro_batches} if self.cfg.mode == "gpipe" else {}
        return {**super().summary_fields(), "stages": len(sizes) - 1, "sizes": sizes, **gpipe}

    @staticmethod
    def build_stage(wire: WireConfig, stage: int):
        from workers.numerics.stage import build

        return build(stage, wire)

    @classmethod
    def evaluate_checkpoint(cls, saved: dict, states: dict[int, dict], data: str) -> tuple[float, int]:
        from workers.numerics.reference import evaluate
        from workers.numerics.snapshot import restore

        # The run's own seed (without --data the task is generated from it), centring and training examples.
        task = cls.load_task(replace(from_saved(saved, strict=True), data=data or saved["data"]))
        wire = WireConfig.from_meta(saved)
        stages = [cls.build_stage(wire, k) for k in range(1, len(wire.sizes))]
        for s in stages:
            restore(s, states.get(s.index, {}), f"stage {s.index}")
        return evaluate(stages, task.x_test, task.y_test, saved["eval_batch"]), len(task.x_test)
