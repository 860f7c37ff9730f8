"""A feed-forward stage's numerics (its layer, optimizer and in-flight batches), and the order of its steps.

No sockets and no clocks here: the worker roles, the single-process reference and the bench
drive the same objects through the same `train_step`, so they do the very same arithmetic.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import numpy as np

from workers.numerics.conv import stage_filters, stage_maps, stage_pools
from workers.numerics.draws import UpdateDraws
from workers.numerics.inflight import Batch, Fit, InFlight
from workers.numerics.layers import ConvBlock, Dense, Head
from workers.numerics.optimizers import Scheduled, check_loss
from workers.numerics.snapshot import copy_into, counter, join, part
from workers.numerics.unlock import Unlock

if TYPE_CHECKING:
    from protocol.wireconfig import WireConfig



class Stage:
    """Hidden stage k: h = relu(x W + b), or for the first len(--conv) stages a conv block (conv, ReLU, pooling);
    updated from M(h) (dni/cdni) or the true gradient (backprop, pipedream)."""

    def __init__(self, index: int, n_in: int, n_out: int, cfg: WireConfig):
        rng = np.random.default_rng([cfg.seed, index])  # same init in every process layout
        self.index = index
        self.locked = not cfg.synthetic   # the true gradient: backprop, or a pipeline (gpipe, pipedream)
        self.first = index == 1  # stage 1's input is data: no gradient to send for it
        # BP(lambda): 0 sends stage k-1 its target at once, this stage's synthetic gradient pushed
        # back (the paper's bootstrap); above 0 it waits for this stage's own target (see `learn`).
        self.bp_lambda = cfg.bp_lambda
        self.bootstraps = not self.locked and self.bp_lambda == 0
        filters = stage_filters(cfg.conv)
        if index <= len(filters):
            pools = stage_pools(cfg.pool, len(filters))
            maps = stage_maps(cfg.image, filters, pools)
            self.layer = ConvBlock(maps[index - 1], filters[index - 1], cfg.kernel, pools[index - 1], rng)
            shape = maps[index]
        else:
            self.layer, shape = Dense(n_in, n_out, rng), None
        self.opt = Scheduled({"layer": self.layer.params}, cfg)
        self.inflight = InFlight(cfg, n_out, cfg.sizes[-1], None if self.locked else rng, maps=shape)
        self.draws = UpdateDraws(cfg.p_update, cfg.seed, index)   # --p-update: whether it updates on a batch
        self.unlock = unlocked(cfg, index, n_in)

    @property
    def updates(self) -> int:
        return self.inflight.updates

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Evaluation: forward only, nothing cached, no update."""
        return self.layer.forward(x)

    def forward_and_keep(self, b: int, x: np.ndarray, y: np.ndarray, t_received: float = 0.0) -> np.ndarray:
        h, route = self.layer.forward_train(x)
        self.inflight.keep(b, Batch(x, h, y, t_received, route=route))
        return h

    def synthetic_gradient(self, b: int) -> np.ndarray:
        return self.inflight.predict(b)

    def update(self, b: int, g: np.ndarray, stashed: dict[str, np.ndarray] | None = None
               ) -> tuple[np.ndarray | None, Batch]:
        """Update from dL/dh = g for batch b; returns dL/dx for the stage below (None for stage 1),
        and b's in-flight entry.

        dL/dx is computed with the weights that made h: the current ones, before they change, or
        `stashed` (pipedream: they changed since); a synthetic update computes it only for the
        bootstrap (bp_lambda 0).
        """
        batch = self.inflight[b]
        need_dx = not self.first and (self.locked or self.bootstraps)
        grads, dx = self.layer.backward(batch.tape, batch.h, g, need_dx=need_dx, params=stashed, route=batch.route)
        self.opt.step({"layer": grads}, schedule_position(self.unlock, self.draws.position(self.inflight.updates + 1)))
        return dx, self.inflight.updated(b)

    def skip(self, b: int) -> tuple[np.ndarray | None, Batch]:
        """No update for batch b (--p-update): b stays in flight for M's fit, and under BP(0) the stage
        below still gets its bootstrapped target, ĝ_b pushed back through this layer."""
        batch = self.inflight[b]
        bootstrapped = self.bootstraps and not self.first
        dx = self.layer.input_gradient(batch.h, batch.g_hat, batch.route) if bootstrapped else None
        return dx, self.inflight.updated(b, made=False)

    def learn(self, b: int, target: np.ndarray) -> tuple[Fit | None, np.ndarray | None]:
        """M fitted to b's target; and, unless it bootstraps, the target for stage k-1's M:
        lambda * target + (1 - lambda) * ĝ_b pushed back through this layer, with its current
        weights (None for stage 1, or b no longer in flight).

        At lambda 1 every synthesizer regresses on the true gradient, one round trip late: the
        bootstrap's errors compound with depth (docs/defaults.md, BP(lambda)).
        """
        batch = self.inflight.batches.get(b)
        fit = self.inflight.fit(b, target)
        if fit is None or self.first or self.bootstraps:
            return fit, None
        g = target if self.bp_lambda == 1 else self.bp_lambda * target + (1 - self.bp_lambda) * batch.g_hat
        return fit, self.layer.input_gradient(batch.h, g, batch.route)

    def state(self) -> dict[str, np.ndarray]:
        return {**join(layer=self.layer.params, opt=self.opt.state()), **self.inflight.state(), **self.draws.state(),
                **unlock_state(self.unlock)}

    def load_state(self, saved: dict[str, np.ndarray]) -> None:
        copy_into(self.layer.params, part(saved, "layer"))
        self.opt.load_state(part(saved, "opt"))
        self.inflight.load_state(saved)
        self.draws.load_state(saved)
        if self.unlock is not None:
            self.unlock.load_state(saved)


def train_step(stage: Stage, b: int, x: np.ndarray, y: np.ndarray, t_received: float = 0.0,
               send_on: Callable[[np.ndarray], None] | None = None
               ) -> tuple[np.ndarray, np.ndarray | None, Batch | None]:
    """Hidden stage k's part of training batch b, in the one order every driver follows.

    1. h = f(x), b kept in flight;  2. h handed on at once (send_on), so stage k+1 starts;
    then, decoupled: 3. ĝ = M(h);  4. the update from ĝ (unless --p-update skips it), with (BP(0)
    only) the bootstrapped target δ for stage k-1 computed before the weights change. Locked backprop stops after 2:
    its update waits for the true gradient (`Stage.update`). M is fitted when δ_k comes back
    (`Stage.learn`, which at BP(lambda > 0) also makes stage k-1's target).
    Returns (h, the bootstrapped δ for stage k-1 or None, b's in-flight entry once updated, else None).
    """
    h = stage.forward_and_keep(b, x, y, t_received)
    if send_on is not None:
        send_on(h)
    if stage.locked:
        return h, None, None
    g_hat = stage.synthetic_gradient(b)
    target_below, batch = stage.update(b, g_hat) if stage.draws.next() else stage.skip(b)
    return h, target_below, batch


class HeadStage:
    """The top stage: owns the loss, updates from the true gradient, sends dL/dx down."""

    def __init__(self, index: int, n_in: int, n_classes: int, cfg: WireConfig):
        rng = np.random.default_rng([cfg.seed, index])
        self.index = index
        self.head = Head(n_in, n_classes, rng)
        self.opt = Scheduled({"layer": self.head.params}, cfg)
        self.updates = 0
        self.draws = UpdateDraws(cfg.p_update, cfg.seed, index)
        self.unlock = unlocked(cfg, index, n_in)

    def loss_and_grads(self, x: np.ndarray, y: np.ndarray):
        """(loss, correct, grads, dL/dx); the caller sends dL/dx down before calling update."""
        return self.head.loss_and_grads(x, y)

    def update(self, grads: dict[str, np.ndarray]) -> None:
        self.updates += 1
        self.opt.step({"layer": grads}, schedule_position(self.unlock, self.draws.position(self.updates)))

    def evaluate(self, x: np.ndarray, y: np.ndarray) -> tuple[float, int]:
        """(summed loss, correct count), no update."""
        return self.head.evaluate(x, y)

    def state(self) -> dict[str, np.ndarray]:
        return {**join(layer=self.head.params, opt=self.opt.state()), "updates": counter(self.updates),
                **self.draws.state(), **unlock_state(self.unlock)}

    def load_state(self, saved: dict[str, np.ndarray]) -> None:
        copy_into(self.head.params, part(saved, "layer"))
        self.opt.load_state(part(saved, "opt"))
        self.updates = int(saved["updates"])
        self.draws.load_state(saved)
        if self.unlock is not None:
            self.unlock.load_state(saved)


def unlocked(cfg: WireConfig, index: int, n_in: int) -> Unlock | None:
    """--synthetic-inputs: every stage above the first learns I(x) for its input (workers/numerics/unlock.py)."""
    return Unlock(cfg, index, n_in) if cfg.synthetic_inputs and index > 1 else None


def schedule_position(unlock: Unlock | None, taken: int) -> int:
    """Where the rate schedule stands after `taken` updates or draws: one step a batch (Unlock.position)."""
    return taken if unlock is None else unlock.position(taken)


def unlock_state(unlock: Unlock | None) -> dict[str, np.ndarray]:
    return unlock.state() if unlock is not None else {}


def head_step(head: HeadStage, x: np.ndarray, y: np.ndarray,
              send_back: Callable[[np.ndarray], None] | None = None) -> tuple[float, int, np.ndarray]:
    """The head's part of training a batch: the loss, and the true gradient dL/dx handed back
    (send_back) before the head's own update, which --p-update may skip (head.updates then stays).
    Returns (loss, correct count, dL/dx)."""
    loss, correct, grads, g = head.loss_and_grads(x, y)
    check_loss(loss)   # before the gradient goes down: a finite loss means finite logits, hence a finite g
    if send_back is not None:
        send_back(g)
    if head.draws.next():
        head.update(grads)
    return loss, correct, g


def build(index: int, cfg: WireConfig) -> Stage | HeadStage:
    """Stage `index` (1-based) of the network whose layer sizes are cfg.sizes (input ... classes)."""
    sizes = cfg.sizes
    if index == len(sizes) - 1:
        return HeadStage(index, sizes[-2], sizes[-1], cfg)
    return Stage(index, sizes[index - 1], sizes[index], cfg)
