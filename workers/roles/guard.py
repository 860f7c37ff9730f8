"""What a worker checks of a decoded message before a handler uses it: its id, its shapes, its labels, its values.

The schema (protocol/schema.py) has checked presence, dtype kind and rank; only the receiver
knows the widths, the classes and the ids it can expect. Each check returns the reason to drop
(a fixed string: the drop counters stay bounded) or None. Together they cost a few µs per
message: a finite check is one BLAS dot product over the array.
"""
from __future__ import annotations

import numpy as np

from protocol import Kind, Message
from workers.numerics.optimizers import finite

FLOAT = np.dtype(np.float32)   # what every stage computes in, and sends
# Kinds whose ids are training batch ids: they start where the run starts (0, or a resumed step).
BATCH_IDS = frozenset({Kind.FORWARD, Kind.GRAD, Kind.PUSH})


def values_fault(*arrays: np.ndarray) -> str | None:
    for a in arrays:
        if not finite(a):
            return "values not finite"
    return None


def labels_fault(y: np.ndarray, n: int, classes: int, low: int = 0) -> str | None:
    """Labels for n examples in [low, classes); low -1 marks steps that are not scored (Copy)."""
    if len(y) != n:
        return "labels do not match the input"
    if y.size and (int(y.min()) < low or int(y.max()) >= classes):
        return "label out of range"
    return None


def batch_fault(msg: Message, width: int, classes: int) -> str | None:
    """A FORWARD or EVAL batch for a stage whose input is `width` wide and whose labels are < classes."""
    x, y = msg.arrays.get("x"), msg.arrays.get("y")
    if x is None or y is None or y.ndim != 1:
        return "arrays not those of a batch"
    if x.dtype != FLOAT or x.ndim != 2 or x.shape[1] != width or len(x) == 0:
        return "input of the wrong shape or dtype"
    return labels_fault(y, len(x), classes) or values_fault(x)


def grad_fault(g: np.ndarray, h: np.ndarray) -> str | None:
    """A gradient for an output h this stage sent."""
    if g.dtype != h.dtype or g.shape != h.shape:
        return "gradient of the wrong shape"
    return values_fault(g)


class Window:
    """Per stream (sender, kind): how far the stream has come. An id more than `span`
    (protocol/window.py: id_span) from there is none the sender could have sent.

    Every stream but PUSH is consecutive (steps, evaluation ids, barrier tokens, pulls), so the
    mark moves one id at a time: ids further ahead are taken but do not move it. Else forged
    ids, each within the window of the last, could walk it away from the real stream, whose
    next message would then be dropped and the run stall. A box skips the pushes of batches
    that leave it no gradient: there the mark follows the highest id of any box.

    No dedup by id: where names can be forged (no CURVE), a forged id taken first would make
    the real one look like a duplicate and hang the run. A repeat does no harm: the coordinator
    counts each credit once, per batch id.
    """

    def __init__(self, span: int, start: int = 0):
        self.span, self.start = span, start
        self.top: dict[tuple[str, Kind], int] = {}   # keys: only senders the role takes data from

    @staticmethod
    def stream(src: str, kind: Kind) -> tuple[str, Kind]:
        # Pushes: one stream for all boxes. A box may skip pushes for longer than the window
        # (the Copy task's curriculum: no output in it yet, hence no gradient, for 100 batches);
        # its first push is then near the batches the other boxes push, not near its own last.
        return ("", kind) if kind is Kind.PUSH else (src, kind)

    def mark(self, src: str, kind: Kind) -> int:
        top = self.top.get(self.stream(src, kind))
        return (self.start if kind in BATCH_IDS else 0) - 1 if top is None else top

    def admits(self, src: str, kind: Kind, b: int) -> bool:
        top = self.mark(src, kind)
        return top - self.span < b <= top + self.span

    def took(self, src: str, kind: Kind, b: int) -> int:
        """b was admitted; returns the stream's mark after it. A stream's first id sets the mark
        (some count from 1: pulls, and the answers to them)."""
        top, key = self.mark(src, kind), self.stream(src, kind)
        if key not in self.top or b == top + 1 or (kind is Kind.PUSH and b > top):
            self.top[key] = top = b
        return top
