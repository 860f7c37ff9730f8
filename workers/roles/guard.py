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
DATA = frozenset({np.dtype(np.uint8), FLOAT})   # what a dataset's examples are: pixels, or floats
# Kinds whose ids are training batch ids: they start where the run starts (0, or a resumed step).
BATCH_IDS = frozenset({Kind.FORWARD, Kind.INPUT, Kind.GRAD, Kind.PUSH})
# The one reason to drop that a real message may have: it came late, its batch evicted.
NOT_IN_FLIGHT = "gradient for a batch not in flight"
# Streams that count from 1 (a box's pulls, and the service's answers to its requests: pulls and pushes);
# evaluation ids from where the assignment says; every other from 0.
FIRST_IDS = {Kind.PULL: 1, Kind.PARAMS: 1}


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


def network_input(msg: Message) -> np.ndarray:
    """An INPUT's examples: its pixels, or its float values."""
    return msg.arrays["pixels"] if "pixels" in msg.arrays else msg.arrays["x"]


def input_fault(msg: Message, width: int, classes: int, other: np.ndarray | None) -> str | None:
    """An INPUT: a batch of the network's input, as the data's own bytes (uint8 pixels, or float32), with its
    labels; `other`: the batch's real input, if it came first, whose rows it must match."""
    x, y = network_input(msg), msg.arrays["y"]
    if x.dtype not in DATA or x.shape[1] != width or len(x) == 0 or other is not None and len(other) != len(x):
        return "network input of the wrong shape or dtype"
    return labels_fault(y, len(x), classes) or (values_fault(x) if x.dtype == FLOAT else None)


def grad_fault(g: np.ndarray, h: np.ndarray) -> str | None:
    """A gradient for an output h this stage sent."""
    if g.dtype != h.dtype or g.shape != h.shape:
        return "gradient of the wrong shape"
    return values_fault(g)


class Window:
    """Per stream (sender, kind): how far the stream has come. An id more than `span`
    (protocol/window.py: id_span) from there is none the sender could have sent.

    Every stream is consecutive (steps, evaluation ids, barrier tokens, pulls), and each starts
    where the assignment says (evaluation ids: at a secret random id, which no forger can guess;
    coordinator/control/pipeline.py), so the mark moves one id at a time from a start it knows: ids further
    ahead are taken but do not move it. Else forged ids could walk it away from the real stream,
    whose next message would then be dropped and the run stall: a forged first id that set the
    mark (662df88: a box's barrier tokens), or pushes each within the window of the last.

    Pushes are one stream for all boxes, and consecutive as such: a box may skip the pushes of
    batches that leave it no gradient (the Copy task's curriculum: no output in it yet, for 100
    batches), but every batch has a loss in some box, whose push is the next id.

    No dedup by id: where names can be forged (no CURVE), a forged id taken first would make
    the real one look like a duplicate and hang the run. A repeat does no harm: the coordinator
    counts each credit once, per batch id.
    """

    def __init__(self, span: int, start: int = 0, eval_start: int = 0):
        self.span, self.start = span, start
        self.first = {**FIRST_IDS, Kind.EVAL: eval_start}
        self.top: dict[tuple[str, Kind], int] = {}   # keys: only senders the role takes data from

    @staticmethod
    def stream(src: str, kind: Kind) -> tuple[str, Kind]:
        return ("", kind) if kind is Kind.PUSH else (src, kind)

    def mark(self, src: str, kind: Kind) -> int:
        """The last id of the stream taken in order; before any, the one before its first."""
        top = self.top.get(self.stream(src, kind))
        return top if top is not None else self.start - 1 if kind in BATCH_IDS else self.first.get(kind, 0) - 1

    def admits(self, src: str, kind: Kind, b: int) -> bool:
        top = self.mark(src, kind)
        return top - self.span < b <= top + self.span

    def took(self, src: str, kind: Kind, b: int) -> int:
        """b was admitted; returns the stream's mark after it."""
        top = self.mark(src, kind)
        if b == top + 1:
            self.top[self.stream(src, kind)] = top = b
        return top
