"""The recurrent plan (`--model rnn`): a process per time box, the parameter service when weights are tied."""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from coordinator.config import Config, ConfigError, from_saved
from coordinator.data.tasks import CopyTask, Task, image_task, n_inputs, sequences
from coordinator.plans.base import Plan
from protocol.roles import BOX, PARAMS
from protocol.wireconfig import WireConfig
from workers.numerics.sequence_tasks import PER_STEP_TASKS

SOLVED_BITS = 0.15      # the paper's curriculum: a length is solved below 0.15 bits per output


def service_ages(service: dict) -> dict[str, dict]:
    """From the parameter service's counters in summary.json: how late its gradients landed and how stale the
    boxes' reads were, in updates, the mean over its pushes and the most."""
    pushes = max(service["pushes"], 1)
    return {"grad_delay": {"mean": service["grad_delay_sum"] / pushes, "max": service["max_grad_delay"]},
            "read_staleness": {"mean": service["read_staleness_sum"] / pushes, "max": service["max_read_staleness"]}}


class Recurrent(Plan):
    model = "rnn"

    def __init__(self, cfg: Config, task: Task):
        self.solved = 0          # the longest Copy length solved so far
        super().__init__(cfg, task)

    @classmethod
    def load_task(cls, cfg: Config, eval_length: int | None = None) -> Task:
        if cfg.task in PER_STEP_TASKS:
            return CopyTask(cfg, eval_length)
        if not cfg.data:
            raise ConfigError(f"--task {cfg.task} reads MNIST: give --data DIR (--task {' and '.join(PER_STEP_TASKS)} "
                              "need no data)")
        return image_task(cfg, [0, 1] if cfg.task.startswith("mnist01") else cfg.class_list())

    def derived_fields(self) -> dict:
        c = self.cfg
        return {"n_in": n_inputs(c.task, c.boxes * c.steps_per_box), "n_classes": self.task.n_classes}

    @staticmethod
    def roles_for(cfg: Config) -> list[str]:
        return [BOX] * cfg.boxes + ([] if cfg.untied else [PARAMS])

    def links(self) -> dict[int, dict[str, int | None]]:
        """Each box to its neighbours in time (--stream: the last and the first too) and to the service, the service
        to every box."""
        K = self.cfg.boxes
        plan = {j: {"prev": j - 1 if j > 1 else None, "next": j + 1 if j < K else None} for j in range(1, K + 1)}
        if self.cfg.stream:   # the last box's state on to box 1, box 1's gradient for it back
            plan[1]["carry"], plan[K]["carry"] = K, 1
        if not self.cfg.untied:
            for j in range(1, K + 1):
                plan[j]["params"] = K + 1
            plan[K + 1] = {f"box-{j}": j for j in range(1, K + 1)}
        return plan

    def credit(self) -> str:
        return "coordinator"   # the coordinator feeds every box: no one link carries the batches

    def path(self) -> list[int]:
        return list(range(1, self.cfg.boxes + 1))   # the boxes; not the parameter service

    def split(self, x: np.ndarray, y: np.ndarray) -> dict[int, dict[str, np.ndarray]]:
        """Every box gets its own slice of the input straight from the coordinator.

        Why direct, not through box 1: each box's input is ready at once and crosses one socket, not
        j of them (box 1 forwarding would carry the whole rest of the sequence down the chain); the
        state message stays small. The cost is K sends per batch instead of one and a join at each
        box (slice + state, by batch id). The credit window is still one credit per batch, returned
        by the last box's DONE. Labels go to box 1 and then travel with the state.
        """
        K, T = self.cfg.boxes, self.cfg.steps_per_box
        xs = sequences(self.cfg.task, x, K * T)
        parts = {j: {"x": xs if len(xs) == 1 else xs[(j - 1) * T:j * T]} for j in range(1, K + 1)}
        parts[1]["y"] = y
        return parts

    def after_epoch(self, entry: dict, last: bool) -> str:
        """The Copy curriculum: the length grows by one after an epoch that solved it (not after the last)."""
        if not isinstance(self.task, CopyTask):
            return ""
        bits = entry["test_loss"] / math.log(2)
        entry.update(copy_length=self.task.length, bits=bits)
        line = f"  length {self.task.length}  {bits:.3f} bits"
        if bits < SOLVED_BITS:
            self.solved = self.task.length
            if self.task.length < self.task.max_length and not last:
                self.task.grow()
        return line

    def curriculum(self) -> dict:
        return {"copy_length": self.task.length, "copy_solved": self.solved} if isinstance(self.task, CopyTask) else {}

    def restore_curriculum(self, saved: dict) -> None:
        if isinstance(self.task, CopyTask) and saved:
            self.task, self.solved = CopyTask(self.cfg, saved["copy_length"]), saved["copy_solved"]

    def checkpoint_config(self) -> dict:
        # eval_length: the Copy length the test set stands at, so `dni eval` tests what the run tested.
        return {**super().checkpoint_config(), "eval_length": getattr(self.task, "length", 0)}

    def summary_fields(self) -> dict:
        fields = {**super().summary_fields(), "stages": self.cfg.boxes}
        return {**fields, "copy_solved": self.solved} if isinstance(self.task, CopyTask) else fields

    def describe(self, summary: dict) -> list[str]:
        """The parameter service's staleness, the Copy curriculum."""
        lines = []
        service = summary.get("workers", {}).get(str(summary["boxes"] + 1), {})
        if "pushes" in service:
            ages = service_ages(service)
            lines.append(f"  parameter service: {service['steps']} steps from {service['pushes']} pushes; "
                         f"boxes computed with weights at most {service['max_read_staleness']} updates old "
                         f"(bound {service['bound']}, mean {ages['read_staleness']['mean']:.2f}, "
                         f"{service['transfers']} transfers in {service['answers']} answers, {service['pulls']} to "
                         f"pulls); gradients landed up to {service['max_grad_delay']} updates late (mean "
                         f"{ages['grad_delay']['mean']:.2f})")
        if "copy_solved" in summary:
            lines.append(f"copy task: longest length solved {summary['copy_solved']} (below {SOLVED_BITS} bits "
                         f"per output), boxes of {summary['steps_per_box']} steps")
        return lines

    @staticmethod
    def build_stage(wire: WireConfig, stage: int):
        """Time box `stage`, or the parameter service after the last box."""
        from workers.numerics.paramstore import ParamStore
        from workers.numerics.timebox import TimeBox

        return TimeBox(stage, wire) if stage <= wire.boxes else ParamStore(wire)

    @classmethod
    def evaluate_checkpoint(cls, saved: dict, states: dict[int, dict], data: str) -> tuple[float, int]:
        """On the test set the run's last epoch used."""
        from workers.numerics import rnn_reference

        cfg = replace(from_saved(saved, strict=True), data=data or saved["data"])
        plan = cls(cfg, cls.load_task(cfg, saved.get("eval_length")))
        boxes, store = rnn_reference.build(WireConfig.from_meta(saved))
        rnn_reference.load_checkpoint(boxes, store, states)
        x, y, n = plan.task.x_test, plan.task.y_test, saved["eval_batch"]
        parts = (plan.split(x[i:i + n], y[i:i + n]) for i in range(0, len(x), n))
        return rnn_reference.evaluate(boxes, store, parts)[0], len(x)
