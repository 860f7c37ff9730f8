"""The feed-forward plan: a process per layer, the head last; the coordinator feeds stage 1."""
from __future__ import annotations

from coordinator.config import BEFORE, Config
from coordinator.data.tasks import Task, image_task
from coordinator.plans.base import Plan
from protocol.roles import HEAD, LAYER
from protocol.wireconfig import WireConfig


class FeedForward(Plan):
    model = "ff"

    @classmethod
    def load_task(cls, cfg: Config, eval_length: int | None = None) -> Task:
        return image_task(cfg, cfg.class_list(), centre=cfg.centre)

    def sizes(self) -> list[int]:
        dataset = self.task.dataset
        return [dataset.n_features, *self.cfg.hidden_sizes(), dataset.n_classes]

    def model_fields(self) -> dict:
        return {"sizes": self.sizes(), "bp_lambda": self.cfg.bp_lambda}

    @staticmethod
    def roles_for(cfg: Config) -> list[str]:
        return [LAYER] * len(cfg.hidden_sizes()) + [HEAD]

    def links(self) -> dict[int, dict[str, int | None]]:
        return {k: {"prev": k - 1, "next": k + 1} for k in range(1, self.n_workers + 1)}

    def checkpoint_config(self) -> dict:
        # The inputs' centring depends on the training examples used: `dni eval` redoes it.
        return {**super().checkpoint_config(), "centre": self.cfg.centre, "train_subset": self.cfg.train_subset}

    def summary_fields(self) -> dict:
        sizes = self.sizes()
        return {"mode": self.cfg.mode, "stages": len(sizes) - 1, "sizes": sizes}

    @classmethod
    def evaluate_checkpoint(cls, saved: dict, states: dict[int, dict], data: str) -> tuple[float, int]:
        from workers.numerics.reference import evaluate
        from workers.numerics.snapshot import restore
        from workers.numerics.stage import build

        # The run's own seed: without --data the task is generated from it.
        task = cls.load_task(Config(data=data or saved["data"], classes=saved["classes"], seed=saved["seed"],
                                    centre=saved.get("centre", BEFORE["centre"]), train_subset=saved.get("train_subset", 0)))
        wire = WireConfig.from_meta(saved)
        stages = [build(k, wire) for k in range(1, len(wire.sizes))]
        for s in stages:
            restore(s, states.get(s.index, {}), f"stage {s.index}")
        return evaluate(stages, task.x_test, task.y_test, saved["eval_batch"]), len(task.x_test)
