"""encode(msg) -> frames and decode(frames) -> msg: a msgpack header, then one raw frame per array."""
from __future__ import annotations

from math import prod

import msgpack
import numpy as np
import zmq

from protocol.kinds import DTYPES, MAX_ARRAYS, MAX_HEADER_BYTES, MAX_NDIM, VERSION, Kind
from protocol.message import Message, ProtocolError, VersionMismatch
from protocol.schema import check

# The codec runs four times per round trip, right after a wake-up, when Python runs several
# times slower than in a tight loop: every step it saves shows in the latency. Hence an
# array header (a map cost ~8 µs more per round trip), lookups for dtype names and kinds
# (dtype.name alone costs ~2 µs), one reused Packer, and validation as a single fast test
# with the detailed diagnosis only on failure.
_NAMES = {np.dtype(name): name for name in DTYPES}
_DTYPES = {name: np.dtype(name) for name in DTYPES}
_KINDS = {str(kind): kind for kind in Kind}
# The header: [version, kind, src, id, meta, array specs], each spec [name, dtype, shape].
# Positional, and the version first, so any build can read any other's version.
_FIELDS = (("kind", str), ("src", str), ("id", int), ("meta", dict), ("arrays", list))
_pack = msgpack.Packer(use_bin_type=True).pack   # pack() holds the GIL throughout: safe to share


def encode(msg: Message) -> list:
    """Frames ready to send with copy=False: arrays are not copied (unless not contiguous)."""
    frames, specs = [None], []
    for name, a in msg.arrays.items():
        if not a.flags.c_contiguous:
            a = np.ascontiguousarray(a)
        specs.append((name, _NAMES.get(a.dtype) or a.dtype.name, a.shape))
        frames.append(a)
    # msgpack packs the Kind (a str) as its string and tuples as arrays.
    frames[0] = _pack((VERSION, msg.kind, msg.src, msg.id, msg.meta, specs))
    return frames


def decode(frames: list) -> Message:
    """Strictly parse frames into a Message that carries what its kind must; ProtocolError otherwise."""
    return check(parse(frames))


def parse(frames: list) -> Message:
    """The wire format alone: header and frames into a Message; ProtocolError on anything malformed."""
    if not frames:
        raise ProtocolError("empty message")
    head = frames[0]
    # A header is small: a copy of it is cheaper than a memoryview over the frame.
    raw = head.bytes if type(head) is zmq.Frame else head
    if len(raw) > MAX_HEADER_BYTES:
        raise ProtocolError(f"header of {len(raw)} bytes exceeds {MAX_HEADER_BYTES}")
    try:
        # unpackb bounds its containers by the input length, which is bounded above.
        h = msgpack.unpackb(raw)
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise ProtocolError(f"undecodable header: {type(exc).__name__}") from None
    # type() is, not isinstance: msgpack yields exact types, and bool must not pass as int.
    if not (type(h) is list and len(h) == 6 and h[0] == VERSION and type(h[1]) is str and type(h[2]) is str
            and type(h[3]) is int and type(h[4]) is dict and type(h[5]) is list):
        _diagnose(h)
    _, kind, src, id_, meta, specs = h
    kind = _KINDS.get(kind)
    if kind is None:
        raise ProtocolError(f"unknown kind {h[1][:32]!r}")
    if len(specs) != len(frames) - 1 or len(specs) > MAX_ARRAYS:
        raise ProtocolError(f"header names {len(specs)} arrays but {len(frames) - 1} frames follow")
    arrays = {}
    for spec, frame in zip(specs, frames[1:]):
        name, array = _array(spec, frame)
        arrays[name] = array
    if len(arrays) != len(specs):
        raise ProtocolError("duplicate array names")
    return Message(kind, src, id_, meta, arrays)


def _diagnose(h: object) -> None:
    """Raise the error that says what is wrong with a header that failed the fast check."""
    if type(h) is dict:  # version 1 headers were maps
        raise VersionMismatch(h.get("v"))
    if type(h) is not list or not h:
        raise ProtocolError("header is not a non-empty array")
    if h[0] != VERSION:  # first, whatever the length: another version may have other fields
        raise VersionMismatch(h[0])
    if len(h) != len(_FIELDS) + 1:
        raise ProtocolError(f"header has {len(h)} fields, this build expects {len(_FIELDS) + 1}")
    for (name, kind), value in zip(_FIELDS, h[1:]):
        if type(value) is not kind:
            raise ProtocolError(f"header field {name!r} is not {kind.__name__}")


def _array(spec: object, frame) -> tuple[str, np.ndarray]:
    """(name, a view over the frame) after checking the spec against the frame's size."""
    if not (type(spec) is list and len(spec) == 3 and type(spec[0]) is str and type(spec[2]) is list):
        raise ProtocolError("array spec is not [name, dtype, shape]")
    name, dtype, shape = spec
    dt = _DTYPES.get(dtype) if type(dtype) is str else None
    if dt is None:
        raise ProtocolError(f"array {name!r}: dtype {str(dtype)[:32]!r} not allowed")
    if len(shape) > MAX_NDIM:
        raise ProtocolError(f"array {name!r}: bad shape {shape!r}")
    for n in shape:
        if type(n) is not int or n < 0:
            raise ProtocolError(f"array {name!r}: bad shape {shape!r}")
    # A received frame is a buffer whose len() is its size; bytes and arrays go through memoryview.
    nbytes = len(frame) if type(frame) is zmq.Frame else memoryview(frame).nbytes
    expected = prod(shape) * dt.itemsize
    if expected != nbytes:
        raise ProtocolError(f"array {name!r}: frame has {nbytes} bytes, {dtype}{shape} needs {expected}")
    array = np.ndarray(shape, dt, frame)  # a view over the frame, as np.frombuffer gives
    # ZeroMQ packs small messages one after another into one receive buffer, so a frame may start at
    # any byte. numpy copies a misaligned operand on every use, and the copy of a transposed one (W.T)
    # is laid out anew, which changes the BLAS call and the last bits of the result: copied once here,
    # every array computes as it did in its sender (backprop over processes equals BPTT bit for bit).
    return name, array if array.flags.aligned else array.copy()
