"""SGD with momentum and Adam, updating named parameter arrays in place; the rate schedule; the finite check."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from workers.numerics.snapshot import copy_into, join, part

if TYPE_CHECKING:
    from protocol.wireconfig import WireConfig


class NonFinite(ArithmeticError):
    """A loss or gradient that is not finite: applied, it would make the model NaN. The message says what."""


def finite(a: np.ndarray) -> bool:
    """Every value finite, and none absurdly large: the sum of squares, one BLAS pass with no temporary,
    is NaN or inf otherwise (in float32 past ~1e19 per value)."""
    v = a.reshape(-1)
    return math.isfinite(np.dot(v, v))


def check_loss(loss: float, what: str = "the loss") -> float:
    if not math.isfinite(loss):
        raise NonFinite(f"{what} is {loss}")
    return loss


class SGD:
    def __init__(self, params: dict[str, np.ndarray], lr: float, momentum: float = 0.9):
        self.lr, self.momentum = lr, momentum
        self.velocity = {k: np.zeros_like(p) for k, p in params.items()}

    def step(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        for k, g in grads.items():
            v = self.velocity[k]
            v *= self.momentum
            v += g
            params[k] -= self.lr * v

    def state(self) -> dict[str, np.ndarray]:
        return {**join(velocity=self.velocity), "lr": np.array(self.lr)}

    def load_state(self, saved: dict[str, np.ndarray]) -> None:
        copy_into(self.velocity, part(saved, "velocity"))
        self.lr = float(saved["lr"])


class Adam:
    def __init__(self, params: dict[str, np.ndarray], lr: float, beta1=0.9, beta2=0.999, eps=1e-8):
        self.lr, self.beta1, self.beta2, self.eps, self.t = lr, beta1, beta2, eps, 0
        self.m = {k: np.zeros_like(p) for k, p in params.items()}
        self.v = {k: np.zeros_like(p) for k, p in params.items()}
        # Two working arrays per parameter, reused every step: the step's five temporaries, allocated
        # anew, cost as much as its arithmetic at width 256.
        self.work = {k: (np.empty_like(p), np.empty_like(p)) for k, p in params.items()}

    def step(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        self.t += 1
        # Bias corrections folded into the step size: one scalar instead of two array passes.
        # A Python float: a NumPy float64 scalar would promote every float32 update to float64.
        lr = float(self.lr * np.sqrt(1 - self.beta2 ** self.t) / (1 - self.beta1 ** self.t))
        for k, g in grads.items():
            m, v, (a, d) = self.m[k], self.v[k], self.work[k]
            m *= self.beta1
            m += np.multiply(g, 1 - self.beta1, out=a)
            v *= self.beta2
            a = np.multiply(g, g, out=a)
            a *= 1 - self.beta2
            v += a
            d = np.sqrt(v, out=d)
            d += self.eps
            a = np.multiply(m, lr, out=a)   # lr * m / (sqrt(v) + eps), in that order
            params[k] -= np.divide(a, d, out=a)

    def state(self) -> dict[str, np.ndarray]:
        # The step count and the rate too: Adam's bias correction and the schedule resume exactly.
        return {**join(m=self.m, v=self.v), "t": np.array(self.t, np.int64), "lr": np.array(self.lr)}

    def load_state(self, saved: dict[str, np.ndarray]) -> None:
        copy_into(self.m, part(saved, "m"))
        copy_into(self.v, part(saved, "v"))
        self.t, self.lr = int(saved["t"]), float(saved["lr"])


def scheduled_lr(base: float, schedule: str, step: int, total_steps: int) -> float:
    """The layers' rate after `step` updates: constant, or cosine-annealed to 0 over the run.

    Annealing matters most for synthetic gradients, whose noise otherwise caps accuracy.
    """
    if schedule == "constant" or total_steps <= 0:
        return base
    return float(base * 0.5 * (1 + np.cos(np.pi * min(step / total_steps, 1.0))))


def make(name: str, params: dict[str, np.ndarray], lr: float):
    if name == "sgd":
        return SGD(params, lr)
    if name == "adam":
        return Adam(params, lr)
    raise ValueError(f"unknown optimizer {name!r} (choose sgd or adam)")


SYNTH = "synth"   # the group of a synthesizer held with the layers (--shared-synth): Adam at --synth-lr, unscheduled


class Scheduled:
    """The layers' optimizer for each named parameter group, on the run's rate schedule: the one
    place the schedule is wired. A SYNTH group is trained as every synthesizer is, not on the schedule."""

    def __init__(self, groups: dict[str, dict[str, np.ndarray]], cfg: WireConfig):
        self.groups = groups
        self.opts = {g: make("adam", p, cfg.synth_lr) if g == SYNTH else make(cfg.optimizer, p, cfg.lr)
                     for g, p in groups.items()}
        self.base_lr, self.schedule, self.total_steps = cfg.lr, cfg.schedule, cfg.total_steps

    def step(self, grads: dict[str, dict[str, np.ndarray]], done: int, scale: float = 1.0) -> None:
        """Every group with gradients takes a step, the layers' at `scale` times their rate; then each takes
        the rate for after `done` updates.

        Raises NonFinite, before any parameter changes, if a gradient is not finite: the one
        check every update of every stage, time box and parameter service passes through."""
        for group, named in grads.items():
            for name, g in named.items():
                if not finite(g):
                    raise NonFinite(f"the gradient of {group}.{name} is not finite")
        lr = scheduled_lr(self.base_lr, self.schedule, done, self.total_steps)
        for group, opt in self.opts.items():
            if grads.get(group):
                if group != SYNTH:
                    opt.lr *= scale   # for this step only: the layers' rate is set anew just below
                opt.step(self.groups[group], grads[group])
            if group != SYNTH:
                opt.lr = lr

    def state(self) -> dict[str, np.ndarray]:
        """Every group's moments, step count and current rate: the schedule's position."""
        return join(**{g: opt.state() for g, opt in self.opts.items()})

    def load_state(self, saved: dict[str, np.ndarray]) -> None:
        for g, opt in self.opts.items():
            opt.load_state(part(saved, g))
