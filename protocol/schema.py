"""Per-kind schema: the arrays (name, dtype kind, rank) and meta fields each kind must carry."""
from __future__ import annotations

from dataclasses import dataclass, field

from protocol.kinds import Kind
from protocol.message import Message, ProtocolError

FLOAT, INT = "f", "iu"   # numpy dtype kinds: floats; signed or unsigned integers


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


_LABELS = (INT, (1, 2))   # one label per sequence, or one per step (Copy: -1 where none is scored)
# A training or evaluation batch: a layer's input (rank 2) with its labels, or a time box's
# slice of the input sequence (rank 3; only box 1 gets the labels); or the state one time box
# hands the next. The receiver checks the widths, which only it knows.
_BATCH = ({"x": (FLOAT, (2, 3)), "y": _LABELS},
          {"x": (FLOAT, (3,))},
          {"h": (FLOAT, (2,)), "y": _LABELS, "stats": (FLOAT, (1,))})

SCHEMAS: dict[Kind, Schema] = {
    Kind.HELLO: Schema({"endpoint": str, "stage": (int, type(None)), "host": str, "pid": Count, "key": str}),
    # start: the first training batch id (a run that resumes does not start at 0).
    Kind.ASSIGN: Schema({"role": str, "stage": Count, "config": dict, "heartbeat": float, "neighbours": dict},
                        optional={"members": list, "start": Count}),
    Kind.REFUSE: Schema({"reason": str}),
    Kind.READY: Schema(),
    Kind.HEARTBEAT: Schema(optional={"seen": dict}),   # a worker's: the last id it took, per data kind
    Kind.DONE: Schema({"loss": float, "correct": Count, "n": Count}),
    Kind.EVALUATED: Schema({"loss_sum": float, "correct": Count, "n": Count}),
    Kind.METRICS: Schema({"records": list}),
    Kind.SYNCED: Schema(),
    Kind.SAVE: Schema(),
    Kind.STATE: Schema(any_floats=True),
    Kind.STOP: Schema(),
    Kind.BYE: Schema({"time_s": dict}, optional={"error": str}),   # error: why a worker gives up
    Kind.FORWARD: Schema(variants=_BATCH),
    Kind.GRAD: Schema(variants=({"g": (FLOAT, (2,))},)),
    Kind.EVAL: Schema(variants=_BATCH),
    Kind.SYNC: Schema(),
    Kind.SYNC_BACK: Schema(),
    Kind.PULL: Schema({"have": Count, "need": Count, "bound": Count}),
    Kind.PARAMS: Schema({"version": Count, "staleness": Count}, any_floats=True),
    Kind.PUSH: Schema({"version": Count}, any_floats=True),
}
# Variants by their set of array names (unique within a kind): one dict look-up per message.
_VARIANTS = {kind: {frozenset(v): v for v in s.variants} for kind, s in SCHEMAS.items()}


def check(msg: Message) -> Message:
    """The message itself if it carries what its kind must; else ProtocolError saying what is wrong."""
    schema = SCHEMAS[msg.kind]
    for fields, required in ((schema.meta, True), (schema.optional, False)):
        for name, kind in fields.items():
            if name in msg.meta:
                if not _fits(msg.meta[name], kind):
                    raise ProtocolError(f"{msg.kind} field {name!r} is not {_name(kind)}")
            elif required:
                raise ProtocolError(f"{msg.kind} lacks the field {name!r}")
    if schema.any_floats:
        for name, a in msg.arrays.items():
            if a.dtype.kind != FLOAT:
                raise ProtocolError(f"{msg.kind} array {name!r} is {a.dtype}, not a float")
        return msg
    variant = _VARIANTS[msg.kind].get(frozenset(msg.arrays))
    if variant is None:
        wanted = " or ".join(f"[{', '.join(sorted(v))}]" for v in schema.variants)
        raise ProtocolError(f"{msg.kind} carries arrays [{', '.join(sorted(msg.arrays))}], expected {wanted}")
    for name, (kinds, ranks) in variant.items():
        a = msg.arrays[name]
        if a.dtype.kind not in kinds or a.ndim not in ranks:
            raise ProtocolError(f"{msg.kind} array {name!r} is {a.dtype} of rank {a.ndim}, expected "
                                f"{'float' if kinds == FLOAT else 'integer'} of rank {' or '.join(map(str, ranks))}")
    return msg


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
