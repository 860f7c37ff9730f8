"""encode(msg) -> frames and decode(frames) -> msg: a msgpack header, then one raw frame per array."""
from __future__ import annotations

from dataclasses import dataclass, field
from math import prod
from typing import Any

import msgpack
import numpy as np
import zmq

from protocol.kinds import DTYPES, MAX_ARRAYS, MAX_FRAME_BYTES, MAX_HEADER_BYTES, MAX_NDIM, VERSION, Kind


# Lookups instead of per-message work on the hot path: dtype.name alone costs ~2 µs, a
# Kind(...) call or np.dtype(...) several tenths; a message pays them per array each way.
_NAMES = {np.dtype(name): name for name in DTYPES}
_DTYPES = {name: np.dtype(name) for name in DTYPES}
_KINDS = {str(kind): kind for kind in Kind}
_FIELDS = (("k", str), ("s", str), ("i", int), ("m", dict), ("a", list))


class ProtocolError(ValueError):
    """A message that does not follow the protocol; the receiver drops and counts it."""


class VersionMismatch(ProtocolError):
    def __init__(self, theirs: object, ours: int = VERSION):
        super().__init__(f"protocol version mismatch: peer speaks {theirs!r}, this build speaks {ours}")
        self.theirs, self.ours = theirs, ours


@dataclass
class Message:
    kind: Kind
    src: str = ""               # who sent it: "coordinator", "stage-2", ...
    id: int = -1                # batch or step id; with src it lets duplicates be dropped
    meta: dict[str, Any] = field(default_factory=dict)      # small scalars and strings
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


def encode(msg: Message) -> list:
    """Frames ready for send_multipart(copy=False): arrays are not copied."""
    arrays = [np.ascontiguousarray(a) for a in msg.arrays.values()]
    # msgpack packs the Kind (a str) as its string and tuples as arrays: the same bytes as
    # str(kind) and lists, without making them.
    header = {
        "v": VERSION, "k": msg.kind, "s": msg.src, "i": msg.id, "m": msg.meta,
        "a": [(name, _NAMES.get(a.dtype) or a.dtype.name, a.shape) for name, a in zip(msg.arrays, arrays)],
    }
    return [msgpack.packb(header, use_bin_type=True), *arrays]


def _sized(frame) -> tuple[object, int]:
    """(a buffer over the frame, its size in bytes), without copying it."""
    if type(frame) is zmq.Frame:  # received with copy=False: a buffer itself, len() is its size
        return frame, len(frame)
    view = memoryview(frame)      # bytes, arrays
    return view, view.nbytes


def _unpack_header(raw: memoryview) -> dict:
    if len(raw) > MAX_HEADER_BYTES:
        raise ProtocolError(f"header of {len(raw)} bytes exceeds {MAX_HEADER_BYTES}")
    try:
        # unpackb bounds its containers by the input length, which is bounded above.
        header = msgpack.unpackb(raw, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise ProtocolError(f"undecodable header: {type(exc).__name__}") from None
    if not isinstance(header, dict):
        raise ProtocolError("header is not a map")
    if header.get("v") != VERSION:
        raise VersionMismatch(header.get("v"))
    # type() is, not isinstance: msgpack yields exact types, and bool must not pass as int.
    if not (type(header.get("k")) is str and type(header.get("s")) is str and type(header.get("i")) is int
            and type(header.get("m")) is dict and type(header.get("a")) is list):
        key, kind = next((k, t) for k, t in _FIELDS if type(header.get(k)) is not t)
        raise ProtocolError(f"header field {key!r} missing or not {kind.__name__}")
    return header


def _array(spec: object, frame) -> tuple[str, np.ndarray]:
    if not (type(spec) is list and len(spec) == 3 and type(spec[0]) is str
            and type(spec[1]) is str and type(spec[2]) is list):
        raise ProtocolError("array spec is not [name, dtype, shape]")
    name, dtype, shape = spec
    dt = _DTYPES.get(dtype)
    if dt is None:
        raise ProtocolError(f"array {name!r}: dtype {dtype!r} not allowed")
    if len(shape) > MAX_NDIM:
        raise ProtocolError(f"array {name!r}: bad shape {shape!r}")
    for n in shape:
        if type(n) is not int or n < 0:
            raise ProtocolError(f"array {name!r}: bad shape {shape!r}")
    buf, nbytes = _sized(frame)
    expected = prod(shape) * dt.itemsize
    if expected != nbytes or expected > MAX_FRAME_BYTES:
        raise ProtocolError(f"array {name!r}: frame has {nbytes} bytes, {dtype}{shape} needs {expected}")
    return name, np.ndarray(shape, dt, buf)  # a view over the frame, as np.frombuffer gives


def decode(frames: list) -> Message:
    """Strictly parse frames into a Message; raises ProtocolError on anything malformed."""
    if not frames:
        raise ProtocolError("empty message")
    head, size = _sized(frames[0])
    if size > MAX_HEADER_BYTES:
        raise ProtocolError(f"header of {size} bytes exceeds {MAX_HEADER_BYTES}")
    # A header is small: a copy of it is cheaper than a memoryview over the frame.
    header = _unpack_header(head.bytes if head is frames[0] else head)
    kind = _KINDS.get(header["k"])
    if kind is None:
        raise ProtocolError(f"unknown kind {header['k'][:32]!r}")
    specs = header["a"]
    if len(specs) > MAX_ARRAYS or len(specs) != len(frames) - 1:
        raise ProtocolError(f"header names {len(specs)} arrays but {len(frames) - 1} frames follow")
    arrays = dict(_array(spec, frame) for spec, frame in zip(specs, frames[1:]))
    if len(arrays) != len(specs):
        raise ProtocolError("duplicate array names")
    return Message(kind, header["s"], header["i"], header["m"], arrays)
