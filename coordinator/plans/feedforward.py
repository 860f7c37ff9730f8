"""The feed-forward plan: a process per layer, the head last; the coordinator feeds stage 1."""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from coordinator.config import Config, ConfigError, from_saved
from coordinator.data.tasks import Task, image_task
from coordinator.plans.base import Plan
from protocol.roles import HEAD, LAYER
from protocol.wireconfig import WireConfig

CONV_EVAL_BATCH = 128
# Training batches the coordinator may name to stage 1 beyond its credit window under --feed stage, where stage 1
# holds its own limit: they wait at stage 1 (deferred), so that its next batch is there when its credit frees,
# not a round trip over the coordinator's link later. Enough for that round trip at a pipeline's rate.
FEED_AHEAD = 4


class FeedForward(Plan):
    model = "ff"

    def __init__(self, cfg: Config, task: Task):
        super().__init__(cfg, task)
        tail = len(task.dataset.x_train) % cfg.batch_size
        if cfg.mode == "gpipe" and 0 < tail < cfg.micro_batches:
            raise ConfigError(f"--micro-batches {cfg.micro_batches}: each epoch's last batch has only {tail} "
                              f"examples ({len(task.dataset.x_train)} in all, --batch-size {cfg.batch_size})")
        if cfg.feed == "stage" and task.spec is None:
            raise ConfigError("--feed stage: stage 1 reads the training set the options name, and this run's "
                              "was made in code: give --feed coordinator")

    @classmethod
    def load_task(cls, cfg: Config, eval_length: int | None = None) -> Task:
        return image_task(cfg, cfg.class_list(), centre=cfg.centre)

    @staticmethod
    def eval_batch(cfg: Config) -> int:
        """--eval-batch, but CONV_EVAL_BATCH at most with conv stages: a conv stage's forward of 1000 examples
        takes seconds on a loaded machine, the liveness timeout's worth, with no heartbeat meanwhile."""
        return min(cfg.eval_batch, CONV_EVAL_BATCH) if cfg.conv_filters() else cfg.eval_batch

    def window(self) -> int:
        """--window; gpipe: a batch's micro-batches (the flush holds the rest); with pipedream under the
        coordinator's credit, the stages at least: stage 1's 1F1B limit; FEED_AHEAD more where stage 1 reads
        its own data and holds its own limit (feeds_ahead)."""
        if self.cfg.mode == "gpipe":
            return self.cfg.micro_batches
        ahead = FEED_AHEAD if self.feeds_ahead() else 0
        if self.cfg.mode == "pipedream" and self.cfg.credit == "coordinator":
            return max(self.cfg.window, self.n_workers) + ahead
        return self.cfg.window + ahead

    def feeds_ahead(self) -> bool:
        """Whether the coordinator names batches ahead of its credit: under --feed stage (a batch named is 1 KB)
        where stage 1 holds its own limit, which then spaces them alone: link credit, or pipedream's 1F1B."""
        return self.cfg.feed == "stage" and (self.cfg.credit != "coordinator" or self.cfg.mode == "pipedream")

    def ahead(self) -> int:
        return self.cfg.run_ahead if self.cfg.synthetic_inputs else 0

    def inputs(self, x: np.ndarray, y: np.ndarray) -> dict[int, dict[str, np.ndarray]]:
        """--synthetic-inputs: a training batch's network input, as the data's own bytes, to every stage above
        the first (coordinator/control/unlocked.py)."""
        stored = self.task.dataset.as_stored(x)
        name = "pixels" if stored.dtype == np.uint8 else "x"
        return {k: {name: stored, "y": y} for k in range(2, self.n_workers + 1)}

    def maps(self) -> list[tuple[int, int, int]]:
        """The maps into each conv stage and out of the last (none without --conv); ConfigError if one does not fit."""
        from workers.numerics.conv import stage_maps

        cfg, image = self.cfg, self.task.dataset.image
        filters = cfg.conv_filters()
        if not filters:
            return []
        if not image:
            raise ConfigError(f"--conv: {self.task.dataset.name} has no image shape (the generated task is flat "
                              "vectors): give --data with MNIST")
        pools = cfg.conv_pools()
        maps = stage_maps(image, filters, pools)
        for k, ((height, width, _), pool) in enumerate(zip(maps, pools), start=1):
            if cfg.kernel > min(height, width):
                raise ConfigError(f"--kernel {cfg.kernel} is larger than conv stage {k}'s {height}x{width} input map")
            if min(height, width) < pool:
                raise ConfigError(f"--pool {cfg.pool} leaves conv stage {k} a 0x0 map (its input is "
                                  f"{height}x{width}): use a smaller --pool or fewer --conv stages")
        return maps

    def sizes(self) -> list[int]:
        dataset = self.task.dataset
        conv = [h * w * c for h, w, c in self.maps()[1:]]
        return [dataset.n_features, *conv, *self.cfg.hidden_sizes(), dataset.n_classes]

    def derived_fields(self) -> dict:
        shard = {"shard": self.task.spec} if self.cfg.feed == "stage" else {}
        return {"sizes": self.sizes(), "image": list(self.task.dataset.image) if self.cfg.conv_filters() else [],
                **shard}

    def split(self, x: np.ndarray, y: np.ndarray) -> dict[int, dict[str, np.ndarray]]:
        """The whole batch to stage 1; a training batch under --feed stage (the task's by_index: x holds its
        examples' indices, integers) as those indices alone."""
        return {1: {"index": x}} if x.dtype.kind in "iu" else super().split(x, y)

    @staticmethod
    def roles_for(cfg: Config) -> list[str]:
        return [LAYER] * (len(cfg.conv_filters()) + len(cfg.hidden_sizes())) + [HEAD]

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
        cfg = replace(from_saved(saved, strict=True), data=data or saved["data"])
        task = cls.load_task(cfg)
        wire = WireConfig.from_meta(saved)
        stages = [cls.build_stage(wire, k) for k in range(1, len(wire.sizes))]
        for s in stages:
            restore(s, states.get(s.index, {}), f"stage {s.index}")
        return evaluate(stages, task.x_test, task.y_test, cls.eval_batch(cfg)), len(task.x_test)
