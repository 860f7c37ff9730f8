"""A checkpoint read as untrusted input: every entry checked against the config and its bounds before it is used.

The order matters: member sizes from the zip directory, then the config and progress (small JSON
strings) through the flags' own checks, then each array's declared shape and dtype (its .npy
header) against the stage the config builds, and only then the data, which must be finite. Any
failure is a ValueError naming the entry, which checkpoint.read reports as a corrupt checkpoint.
"""
from __future__ import annotations

import json
import math
import zipfile
from dataclasses import MISSING, fields

import numpy as np

from coordinator import plans
from coordinator.config import checked
from coordinator.position import Position
from protocol.codec import ProtocolError
from protocol.kinds import MAX_ARRAYS, MAX_FRAME_BYTES
from protocol.wireconfig import WireConfig

# A stage's state travels to its worker in one message, each array in a frame of at most MAX_FRAME_BYTES
# (its .npy entry adds a header of a few hundred bytes), at most MAX_ARRAYS of them.
MAX_ENTRY_BYTES = MAX_FRAME_BYTES + 64 * 1024
# A layer of width w holds at least a w x w or in x w float32 matrix, itself within one frame.
MAX_WIDTH = math.isqrt(MAX_FRAME_BYTES // 4)
MAX_JSON_BYTES = 16 * 1024 * 1024   # the config and progress strings (a progress's history grows by an epoch's line)
MAX_COUNT = 2 ** 63 - 1             # counters go to the workers as int64
TEXT = ("config", "progress")


def members(zf: zipfile.ZipFile) -> tuple[dict[str, zipfile.ZipInfo], dict[int, dict[str, zipfile.ZipInfo]]]:
    """(the JSON entries, stage -> its arrays) from the zip directory, sizes bounded before anything is read."""
    text, stages = {}, {}
    for info in zf.infolist():
        name = info.filename.removesuffix(".npy")
        limit = MAX_JSON_BYTES if name in TEXT else MAX_ENTRY_BYTES
        if info.file_size > limit:
            raise ValueError(f"entry {name} declares {info.file_size} bytes uncompressed, above the bound of {limit}")
        if name in TEXT:
            text[name] = info
            continue
        stage, _, array = name.partition("/")
        if not (stage.startswith("stage") and stage[5:].isdigit() and array and info.filename.endswith(".npy")):
            raise ValueError(f"unexpected entry {info.filename!r}")
        stages.setdefault(int(stage[5:]), {})[array] = info
    if "config" not in text:
        raise ValueError("no config entry")
    for stage, arrays in stages.items():
        if len(arrays) > MAX_ARRAYS:
            raise ValueError(f"stage {stage} has {len(arrays)} arrays, more than one message carries ({MAX_ARRAYS})")
    return text, stages


def header(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> tuple[tuple, np.dtype]:
    """(shape, dtype) an .npy entry declares, its data not read."""
    with zf.open(info) as f:
        version = np.lib.format.read_magic(f)
        if version not in ((1, 0), (2, 0)):
            raise ValueError(f"entry {info.filename}: .npy format {version} is not one numpy.savez writes")
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read(f)
    return shape, dtype


def array(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> np.ndarray:
    with zf.open(info) as f:
        return np.lib.format.read_array(f, allow_pickle=False)


def text(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> dict:
    """A JSON entry: a 0-d string array holding an object."""
    name = info.filename.removesuffix(".npy")
    shape, dtype = header(zf, info)
    if shape != () or dtype.kind != "U":
        raise ValueError(f"entry {name} is not a JSON string (shape {shape}, dtype {dtype})")
    try:
        value = json.loads(str(array(zf, info)))
    except json.JSONDecodeError as exc:
        raise ValueError(f"entry {name} is not JSON ({exc})") from None
    except (ValueError, RecursionError):   # Python's own limits: an integer of 5,000 digits, 1,000 nested arrays
        raise ValueError(f"entry {name} nests too deep or holds too long a number") from None
    if not isinstance(value, dict):
        raise ValueError(f"entry {name} is not a JSON object")
    return value


def count(value, what: str, high: int = MAX_COUNT) -> int:
    """An integer in [0, high] (bool is not one)."""
    if type(value) is not int or not 0 <= value <= high:
        raise ValueError(f"{what} must be an integer in [0, {high}], got {value!r}")
    return value


def config(saved: dict) -> WireConfig:
    """The checkpoint's config: its options through the flags' checks, the fields derived from them in range."""
    cfg = checked(saved, "its config")
    try:
        wire = WireConfig.from_meta(saved)
    except ProtocolError as exc:
        raise ValueError(f"its config: {exc}") from None
    count(wire.cache, "its config's cache")
    count(wire.total_steps, "its config's total_steps")
    count(saved.get("step"), "its config's step", wire.total_steps)
    count(saved.get("eval_length", 0), "its config's eval_length", cfg.copy_length)
    # A conv stage's output is a map, whose weights do not grow with it: the first dense stage's do.
    n_conv = len(cfg.conv_filters()) if wire.model == "ff" else 0
    if n_conv and (len(wire.sizes) < n_conv + 3 or len(wire.image) != 3):
        raise ValueError(f"its config's sizes and image do not fit its {n_conv} conv stages")
    widths = {"sizes": max((*wire.sizes[:1], *wire.sizes[n_conv + 1:]), default=0), "units": wire.units,
              "synth_hidden": wire.synth_hidden, "n_in": wire.n_in, "n_classes": wire.n_classes}
    if n_conv and wire.sizes[n_conv] * wire.sizes[n_conv + 1] > MAX_WIDTH ** 2:
        raise ValueError(f"its config's first dense stage takes {wire.sizes[n_conv]} inputs: its weights are larger "
                         "than a message can carry")
    for name, width in widths.items():
        if width > MAX_WIDTH:
            raise ValueError(f"its config's {name} holds {width}, wider than any stage a message can carry "
                             f"({MAX_WIDTH})")
    if wire.model == "rnn" and not (wire.n_in >= 1 and wire.n_classes >= 1):
        raise ValueError("its config: n_in and n_classes must be positive")
    return wire


def progress(saved: dict, config: dict, wire: WireConfig) -> None:
    """Where training stood: every field of epochs.Position with its type and range, and its config, which
    --resume runs with, through the flags' checks and the same as the checkpoint's own."""
    kinds = {"str": str, "dict": dict, "list": list, "int": int, "float": (int, float), "dict | None": dict}
    known = {f.name: f for f in fields(Position)}
    extra = sorted(set(saved) - set(known))
    if extra:
        raise ValueError(f"its progress has unknown fields {extra}")
    for name, f in known.items():
        if name not in saved:
            if f.default is MISSING and f.default_factory is MISSING:
                raise ValueError(f"its progress lacks {name}")
            continue   # a field added since the checkpoint was written: Position's default
        value = saved[name]
        if isinstance(value, bool) or not isinstance(value, kinds[f.type]):
            raise ValueError(f"its progress's {name} should be {f.type}, got {value!r}")
        if f.type == "int":
            count(value, f"its progress's {name}")
        if f.type == "float" and not (math.isfinite(value) and value >= 0):
            raise ValueError(f"its progress's {name} must be finite and not negative, got {value!r}")
    pos = Position(**saved)
    cfg = checked(pos.config, "its progress's config", complete=True)
    differ = [name for name, value in config.items() if name in pos.config and pos.config[name] != value]
    if differ or wire.model == "ff" and list(wire.sizes[1 + len(cfg.conv_filters()):-1]) != cfg.hidden_sizes():
        raise ValueError(f"its progress's config and its config differ ({', '.join(differ) or 'hidden'})")
    if pos.step != config["step"]:
        raise ValueError(f"its progress is at step {pos.step}, its config at step {config['step']}")
    count(pos.epoch, "its progress's epoch", cfg.epochs)
    count(pos.batch, "its progress's batch", pos.step)
    if len(pos.history) != pos.epoch or not all(isinstance(h, dict) for h in pos.history):
        raise ValueError(f"its progress's history is not one entry per epoch done ({pos.epoch})")
    for key, value in pos.curriculum.items():
        count(value, f"its progress's curriculum {key}", cfg.copy_length)
    try:
        np.random.PCG64().state = pos.rng
    except (TypeError, ValueError, KeyError, OverflowError) as exc:
        raise ValueError(f"its progress's rng is not a PCG64 state ({exc})") from None


def state(zf: zipfile.ZipFile, wire: WireConfig, stages: dict[int, dict[str, zipfile.ZipInfo]]) -> dict:
    """Every stage's arrays, each declared shape and dtype checked against the stage the config builds before
    its data is read; compatible dtypes (another byte order, a narrower float or int) converted, the rest refused."""
    plan = plans.for_checkpoint({"model": wire.model})
    # Feed-forward: a stage per layer; recurrent: the boxes, and the parameter service when weights are tied.
    n_stages = len(wire.sizes) - 1 if wire.model == "ff" else wire.boxes + (not wire.untied)
    if len(stages) != n_stages or set(stages) != set(range(1, n_stages + 1)):   # (len first: boxes may be 10^9)
        raise ValueError(f"it holds stages {sorted(stages)}, the config's network has 1 to {n_stages}")
    out = {}
    for k, arrays in sorted(stages.items()):
        own = {name: (a.shape, a.dtype) for name, a in plan.build_stage(wire, k).state().items()}
        if set(own) != set(arrays):
            missing, extra = sorted(set(own) - set(arrays)), sorted(set(arrays) - set(own))
            raise ValueError(f"stage {k}: it lacks {missing} and has unexpected {extra}")
        for name, (shape, dtype) in own.items():
            declared, saved = header(zf, arrays[name])
            if declared != shape:
                raise ValueError(f"stage{k}/{name} has shape {declared}, the config's network {shape}")
            if saved.kind != dtype.kind or not np.can_cast(saved, dtype, "safe"):
                raise ValueError(f"stage{k}/{name} is {saved}, which does not convert to {dtype} exactly")
        out[k] = {name: finite(f"stage{k}/{name}", array(zf, arrays[name]).astype(dtype, copy=False))
                  for name, (_, dtype) in own.items()}
    return out


def finite(name: str, a: np.ndarray) -> np.ndarray:
    bad = a.size - np.count_nonzero(np.isfinite(a)) if a.dtype.kind == "f" else 0
    if bad:
        raise ValueError(f"{name} holds {bad} non-finite values")
    return a


def load(zf: zipfile.ZipFile) -> tuple[dict, dict | None, dict]:
    """(config, progress or None, states) of an open checkpoint archive, every check passed."""
    entries, stages = members(zf)
    saved = text(zf, entries["config"])
    wire = config(saved)
    found = text(zf, entries["progress"]) if "progress" in entries else None
    if found is not None:
        progress(found, saved, wire)
    return saved, found, state(zf, wire, stages)
