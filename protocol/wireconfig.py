"""The wire config: what every worker needs to build its stage or time box, one typed object."""
from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, fields

from protocol.codec import ProtocolError


@dataclass(frozen=True, slots=True)
class WireConfig:
    """Built by the coordinator in one place, sent in ASSIGN, read by the workers as fields.

    Feed-forward networks use `sizes` (input, hidden..., classes); recurrent ones the fields
    after it. Both are saved with every checkpoint (config.json), so a checkpoint can be
    rebuilt in one process.
    """
    mode: str               # dni | cdni | backprop (| truncated for rnn)
    optimizer: str          # the layers': sgd | adam
    lr: float
    schedule: str           # constant | cosine
    total_steps: int        # batches in the whole run: the cosine schedule's length
    synth_lr: float
    synth_hidden: int
    seed: int
    log_every: int          # metric records a worker batches into one METRICS message
    cache: int              # in-flight batches a stage keeps awaiting their targets (protocol/window.py)
    window: int = 1         # batches in flight (credit): per link, when credit is "link"
    credit: str = "coordinator"   # link (feed-forward: each stage waits for its next's targets) | coordinator
    model: str = "ff"       # or "rnn"
    sizes: tuple[int, ...] = ()
    bp_lambda: float = 0.0  # 0: bootstrapped targets sent at once (as saved by runs before the option)
    task: str = ""
    cell: str = ""
    units: int = 0
    n_in: int = 0
    n_classes: int = 0
    boxes: int = 0
    steps_per_box: int = 0
    untied: bool = False
    max_staleness: int = 0
    synth_scale: float = 0.0

    def to_meta(self) -> dict:
        """As msgpack and JSON carry it."""
        return {**asdict(self), "sizes": list(self.sizes)}

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
            values[f.name] = _typed(f.name, meta[f.name], _TYPES[f.name])
        if values.get("model", "ff") == "ff" and len(values.get("sizes", ())) < 2:
            raise ProtocolError("wire config field 'sizes' needs an input and an output size at least")
        return cls(**values)


# A field's Python type by name (the annotations are strings under `from __future__`).
_TYPES = {"model": str, "mode": str, "optimizer": str, "lr": float, "schedule": str, "total_steps": int,
          "synth_lr": float, "synth_hidden": int, "seed": int, "log_every": int, "cache": int, "window": int,
          "credit": str, "sizes": tuple, "bp_lambda": float,
          "task": str, "cell": str, "units": int, "n_in": int, "n_classes": int, "boxes": int,
          "steps_per_box": int, "untied": bool, "max_staleness": int, "synth_scale": float}


def _typed(name: str, value: object, kind: type):
    if kind is float and type(value) is int:
        value = float(value)
    if kind is tuple:
        if not (isinstance(value, (list, tuple)) and all(type(v) is int and v > 0 for v in value)):
            raise ProtocolError(f"wire config field {name!r} is not a list of positive integers")
        return tuple(value)
    if type(value) is not kind:
        raise ProtocolError(f"wire config field {name!r} is not {kind.__name__}")
    return value
