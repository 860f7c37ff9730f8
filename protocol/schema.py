"""Per-kind schema: the arrays (name, dtype kind, rank) and meta fields each kind must carry."""
from __future__ import annotations

from dataclasses import dataclass, field

from protocol.kinds import Kind
from protocol.message import Message, ProtocolError

FLOAT, INT, PIXELS = "f", "iu", "u"   # numpy dtype kinds: floats; signed or unsigned integers; unsigned ones


class Count:
    """Marks a meta field that must be an integer >= 0 (a version, a count)."""


# A meta field's type: a Python type, Count, or a tuple of them (float also takes int).
@dataclass(frozen=True)
class Schema:
    meta: dict[str, object] = field(default_factory=dict)          # required fields
    optional: dict[str, object] = field(default_factory=dict)      # checked when present
    # Allowed array sets: each variant maps name -> (dtype kinds, allowed ranks). () = no arrays.
    variants: tuple[dict[str, tuple[str, tuple[int, ...]]], ...] = ({},)
    any_floats: bool = False   # instead of variants: any named float arrays (parameters, gradients)
    any_kinds: str = FLOAT     # ...or of these dtype kinds (a full state: optimizer step counts too)


_LABELS = (INT, (1, 2))   # one label per sequence, or one per step (Copy: -1 where none is scored)
# A training or evaluation batch: a layer's input (rank 2) with its labels, or a time box's
# slice of the input sequence (rank 3; only box 1 gets the labels); or the state one time box
# hands the next. The receiver checks the widths, which only it knows.
_BATCH = ({"x": (FLOAT, (2, 3)), "y": _LABELS},
          {"x": (FLOAT, (3,))},
          {"h": (FLOAT, (2,)), "y": _LABELS, "stats": (FLOAT, (1,))})

SCHEMAS: dict[Kind, Schema] = {
    Kind.HELLO: Schema({"endpoint": str, "stage": (int, type(None)), "host": str, "pid": Count, "key": str}),
    # start: the first training batch id (a run that resumes does not start at 0); eval_start: the first
    # evaluation id (a secret: coordinator/control/pipeline.py); run: the run directory's name (the worker's title).
    Kind.ASSIGN: Schema({"role": str, "stage": Count, "config": dict, "heartbeat": float, "neighbours": dict},
                        optional={"members": list, "start": Count, "eval_start": Count, "run": str}, any_floats=True,
                        any_kinds=FLOAT + INT),
    Kind.REFUSE: Schema({"reason": str}),
    Kind.READY: Schema(),
    # A worker's: the last id it took, per data kind; its load (protocol/liveness.py LOAD).
    Kind.HEARTBEAT: Schema(optional={"seen": dict, "load": dict}),
    Kind.DONE: Schema({"loss": float, "correct": Count, "n": Count}),
    Kind.TAKEN: Schema(),
    Kind.CREDIT: Schema(),
    Kind.EVALUATED: Schema({"loss_sum": float, "correct": Count, "n": Count}),
    Kind.METRICS: Schema({"records": list}),
    Kind.SYNCED: Schema(),
    Kind.SAVE: Schema(),
    Kind.STATE: Schema(any_floats=True, any_kinds=FLOAT + INT),
    Kind.STOP: Schema(),
    Kind.BYE: Schema({"time_s": dict}, optional={"error": str}),   # error: why a worker gives up
    Kind.RESET: Schema(),
    # With --feed stage, stage 1 is sent a training batch as its examples' indices into the training set it holds.
    Kind.FORWARD: Schema(variants=(*_BATCH, {"index": (INT, (1,))})),
    # A batch's network input as the data's own bytes: an image's pixels (uint8), or a float task's values.
    # ahead: fed ahead of the batch's real input (a stall below): the stage updates from it at once.
    Kind.INPUT: Schema(optional={"ahead": bool},
                       variants=({"pixels": (PIXELS, (2,)), "y": (INT, (1,))}, {"x": (FLOAT, (2,)), "y": (INT, (1,))})),
    # A target; with DNI + Aux, also the sender's synthetic gradient of the batch, for the receiver to predict.
    Kind.GRAD: Schema(variants=({"g": (FLOAT, (2,))}, {"g": (FLOAT, (2,)), "a": (FLOAT, (2,))})),
    Kind.EVAL: Schema(variants=_BATCH),
    Kind.SYNC: Schema(),
    Kind.SYNC_BACK: Schema(),
    Kind.PULL: Schema({"have": Count, "need": Count, "bound": Count, "ask": Count}),
    Kind.PARAMS: Schema({"version": Count, "staleness": Count}, any_floats=True),
    Kind.PUSH: Schema({"version": Count, "read": Count, "need": Count, "bound": Count, "ask": Count}, any_floats=True),
}
# What check() walks, laid out for speed (it runs on every message received): the fields as
# tuples, and the array variants by their set of names (unique within a kind); None: any arrays
# of the kind's dtype kinds.
_PLAN = {kind: (tuple(s.meta.items()), tuple(s.optional.items()),
                None if s.any_floats else {frozenset(v): tuple(v.items()) for v in s.variants}, s.any_kinds)
         for kind, s in SCHEMAS.items()}


def check(msg: Message) -> Message:
    """The message itself if it carries what its kind must; else ProtocolError saying what is wrong."""
    required, optional, variants, any_kinds = _PLAN[msg.kind]
    if required or optional:
        _check_meta(msg, required, optional)
    arrays = msg.arrays
    if variants is None:
        for name, a in arrays.items():
            if a.dtype.kind not in any_kinds:
                raise ProtocolError(f"{msg.kind} array {name!r} is {a.dtype}, not a float"
                                    + (" or an integer" if any_kinds != FLOAT else ""))
        return msg
    variant = variants.get(frozenset(arrays))
    if variant is None:
        wanted = " or ".join(f"[{', '.join(sorted(v))}]" for v in SCHEMAS[msg.kind].variants)
        raise ProtocolError(f"{msg.kind} carries arrays [{', '.join(sorted(arrays))}], expected {wanted}")
    for name, (kinds, ranks) in variant:
        a = arrays[name]
        if a.dtype.kind not in kinds or a.ndim not in ranks:
            raise ProtocolError(f"{msg.kind} array {name!r} is {a.dtype} of rank {a.ndim}, expected "
                                f"{'float' if kinds == FLOAT else 'integer'} of rank {' or '.join(map(str, ranks))}")
    return msg


def _check_meta(msg: Message, required: tuple, optional: tuple) -> None:
    meta = msg.meta
    for fields, must in ((required, True), (optional, False)):
        for name, kind in fields:
            if name in meta:
                if not _fits(meta[name], kind):
                    raise ProtocolError(f"{msg.kind} field {name!r} is not {_name(kind)}")
            elif must:
                raise ProtocolError(f"{msg.kind} lacks the field {name!r}")


def _fits(value: object, kind) -> bool:
    if isinstance(kind, tuple):
        return any(_fits(value, k) for k in kind)
    if kind is Count:
        return type(value) is int and value >= 0   # type() is: bool must not pass as int
    if kind is float:
        return type(value) in (float, int)
    return type(value) is kind


def _name(kind) -> str:
    if isinstance(kind, tuple):
        return " or ".join(_name(k) for k in kind)
    return "a count (integer >= 0)" if kind is Count else kind.__name__
