"""The order of an unlocked stage's steps (--synthetic-inputs): on a batch's network input, and on its real input.

No sockets and no clocks: the layer and head roles drive these, and the tests drive them directly.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from workers.numerics import optimizers
from workers.numerics.inflight import Batch
from workers.numerics.stage import HeadStage, Stage, head_step, train_step


def data_step(stage: Stage, b: int, x: np.ndarray, y: np.ndarray, ahead: bool,
              t_received: float = 0.0) -> Batch | None:
    """A hidden stage takes b's network input: fed ahead, the update from M(f(I(x))) (unless --p-update skips it),
    b kept in flight for M's target; else None (the update is the real input's, Unlock.on_data)."""
    if not stage.unlock.on_data(b, x, y, ahead):
        return None
    stage.forward_and_keep(b, stage.unlock.predict(x, y), y, t_received)
    g_hat = stage.synthetic_gradient(b)
    return (stage.update(b, g_hat) if stage.draws.next() else stage.skip(b))[1]


def real_step(stage: Stage, b: int, x: np.ndarray, y: np.ndarray, t_received: float,
              send_on: Callable[[np.ndarray], None]) -> Batch | None:
    """A hidden stage takes b's real input: its output sent on, I fitted if b's network input came. If b updated
    from I, the real output is what M's target comes back for; else the usual step (`train_step`). Returns b's
    entry once updated here, else None."""
    if stage.unlock.on_real(b, x):
        return train_step(stage, b, x, y, t_received, send_on)[2]
    h, route = stage.layer.forward_train(x)
    send_on(h)
    batch = stage.inflight.batches.get(b)
    if batch is not None:   # (else evicted: its target will be dropped as late)
        batch.h, batch.route = h, route   # (a conv stage's pooling argmax: of the real input's maps)
    return None


def head_data_step(head: HeadStage, b: int, x: np.ndarray, y: np.ndarray, ahead: bool) -> bool:
    """The head takes b's network input: fed ahead, its update from the loss on I(x) (unless --p-update skips
    it). Whether it updated from I."""
    if not head.unlock.on_data(b, x, y, ahead):
        return False
    loss, _, grads, _ = head.loss_and_grads(head.unlock.predict(x, y), y)
    optimizers.check_loss(loss)
    if head.draws.next():
        head.update(grads)
    return True


def head_real_step(head: HeadStage, b: int, x: np.ndarray, y: np.ndarray,
                   send_back: Callable[[np.ndarray], None]) -> tuple[float, int]:
    """The head takes b's real input: the loss and the true gradient sent down; I fitted if b's network input
    came; the update too unless b updated from I. Returns (loss, correct count)."""
    if head.unlock.on_real(b, x):
        return head_step(head, x, y, send_back)[:2]
    loss, correct, _, g = head.loss_and_grads(x, y)
    optimizers.check_loss(loss)
    send_back(g)
    return loss, correct
