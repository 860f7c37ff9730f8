"""Plans: how each model (feed-forward layers, recurrent time boxes) is laid out over processes and fed."""
from __future__ import annotations

from coordinator.config import Config
from coordinator.data import Dataset, ImageTask
from coordinator.plans.base import Plan
from coordinator.plans.feedforward import FeedForward
from coordinator.plans.recurrent import Recurrent

PLANS: dict[str, type[Plan]] = {FeedForward.model: FeedForward, Recurrent.model: Recurrent}


def for_config(cfg: Config, dataset: Dataset | None = None) -> Plan:
    """The plan of cfg.model with its task loaded (fails on bad data before any process starts);
    `dataset` replaces the one the config names (the benchmarks generate theirs)."""
    cls = PLANS[cfg.model]
    return cls(cfg, cls.load_task(cfg) if dataset is None else ImageTask(dataset))


def for_checkpoint(saved: dict) -> type[Plan]:
    """The plan class that wrote a checkpoint's config."""
    return PLANS[saved.get("model", FeedForward.model)]


__all__ = ["PLANS", "Plan", "FeedForward", "Recurrent", "for_config", "for_checkpoint"]
