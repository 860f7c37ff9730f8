"""The wire config: what every worker needs to build its stage or time box, one typed object."""
from __future__ import annotations

from dataclasses import MISSING, asdict, field, fields, make_dataclass

from protocol.codec import ProtocolError
from protocol.options import BOTH, OPTIONS, SYNTHETIC

# The fields the coordinator derives for the workers, besides the `wire` options: (name, type, default).
DERIVED = (
    ("total_steps", int, MISSING),   # batches in the whole run: the cosine schedule's length
    ("cache", int, MISSING),         # in-flight batches a stage keeps awaiting their targets (window.py)
    ("sizes", tuple, ()),            # feed-forward: input, conv stages' outputs (flat), hidden..., classes
    ("image", tuple, ()),            # feed-forward with --conv: the input's (height, width, channels)
    ("n_in", int, 0),                # recurrent: inputs per step
    ("n_classes", int, 0),           # recurrent: outputs
    ("shard", dict, None),           # feed-forward, --feed stage: what names the training set (workers/data/shard.py)
)


def _default(option) -> object:
    """What a field missing from a saved config takes: the option's value before it existed; for an option of
    one model, the type's zero under the other; else nothing (the field is required)."""
    if option.before is not None:
        return option.before
    return MISSING if option.model == BOTH else option.type()


class _Wire:
    """Built by the coordinator in one place, sent in ASSIGN, read by the workers as fields.

    Its fields are the `wire` options of protocol/options.py and the DERIVED ones. Both models' fields
    are saved with every checkpoint (config.json), so a checkpoint can be rebuilt in one process.
    """
    __slots__ = ()

    @property
    def synthetic(self) -> bool:
        """The stages update from their synthesizers (dni, cdni), not from the true gradient."""
        return self.mode in SYNTHETIC

    def to_meta(self) -> dict:
        """As msgpack and JSON carry it."""
        return {**asdict(self), "sizes": list(self.sizes), "image": list(self.image)}

    @classmethod
    def from_meta(cls, meta: object) -> "WireConfig":
        """Parse a received or saved config; ProtocolError names the first field that does not fit."""
        if not isinstance(meta, dict):
            raise ProtocolError("the wire config is not a map")
        values = {}
        for f in fields(cls):
            if f.name not in meta:
                if f.default is MISSING:
                    raise ProtocolError(f"the wire config lacks {f.name!r}")
                continue
            values[f.name] = _typed(f.name, meta[f.name], f.type)
        if values.get("model", "ff") == "ff" and len(values.get("sizes", ())) < 2:
            raise ProtocolError("wire config field 'sizes' needs an input and an output size at least")
        return cls(**values)


WireConfig = make_dataclass(
    "WireConfig", [(o.name, o.type, field(default=_default(o))) for o in OPTIONS if o.wire] + list(DERIVED),
    bases=(_Wire,), namespace={"__doc__": _Wire.__doc__, "__module__": __name__}, frozen=True, slots=True, kw_only=True)


def _typed(name: str, value: object, kind: type):
    if kind is dict and value is None:   # an optional map, absent
        return value
    if kind is float and type(value) is int:
        value = float(value)
    if kind is str and type(value) is int:   # --pool, saved as one int before it took a list
        value = str(value)
    if kind is tuple:
        if not (isinstance(value, (list, tuple)) and all(type(v) is int and v > 0 for v in value)):
            raise ProtocolError(f"wire config field {name!r} is not a list of positive integers")
        return tuple(value)
    if type(value) is not kind:
        raise ProtocolError(f"wire config field {name!r} is not {kind.__name__}")
    return value
