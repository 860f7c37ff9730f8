"""The wire format: round trips, zero-copy, and strict rejection of malformed messages."""
import msgpack
import numpy as np
import pytest
import zmq

from protocol import VERSION, Kind, Message, ProtocolError, VersionMismatch, decode, encode, parse
from protocol.kinds import MAX_HEADER_BYTES
from protocol.sockets import recv, send


def frames_of(**arrays):
    return encode(Message(Kind.FORWARD, "stage-1", 7, {"note": "x"}, arrays))


def header(frames):
    return msgpack.unpackb(frames[0], raw=False)


FIELDS = ("v", "k", "s", "i", "m", "a")   # the header's positions


def with_header(frames, **changes):
    h = header(frames)
    for key, value in changes.items():
        h[FIELDS.index(key)] = value
    return [msgpack.packb(h), *frames[1:]]


def test_round_trip_keeps_everything():
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    y = np.array([1, 2, 3], dtype=np.int64)
    msg = parse(frames_of(x=x, y=y))
    assert (msg.kind, msg.src, msg.id, msg.meta) == (Kind.FORWARD, "stage-1", 7, {"note": "x"})
    np.testing.assert_array_equal(msg.arrays["x"], x)
    assert msg.arrays["y"].dtype == np.int64


def test_arrays_travel_in_their_own_frames_without_copies():
    x = np.ones((128, 256), np.float32)
    frames = frames_of(x=x)
    assert len(frames) == 2 and np.shares_memory(frames[1], x)
    decoded = parse(frames).arrays["x"]
    assert np.shares_memory(decoded, frames[1])  # np.frombuffer over the received frame


def test_a_misaligned_frame_decodes_to_an_aligned_copy():
    """A frame may start at any byte of ZeroMQ's receive buffer: its array is copied to aligned memory."""
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    frames = frames_of(x=x)
    shifted = memoryview(bytearray(x.nbytes + 2))[2:]   # a bytearray starts aligned: 2 bytes on is not
    shifted[:] = x.tobytes()
    assert not np.frombuffer(shifted, np.float32).flags.aligned
    decoded = parse([frames[0], shifted]).arrays["x"]
    assert decoded.flags.aligned and not np.shares_memory(decoded, np.frombuffer(shifted, np.uint8))
    np.testing.assert_array_equal(decoded, x)


def test_arrays_received_over_tcp_are_aligned():
    """Messages of a few hundred bytes share ZeroMQ's receive buffer, at any offset (smaller ones are copied,
    larger ones get their own); every array recv gives is aligned."""
    ctx = zmq.Context.instance()
    pull, push = ctx.socket(zmq.PULL), ctx.socket(zmq.PUSH)
    try:
        port = pull.bind_to_random_port("tcp://127.0.0.1")
        push.connect(f"tcp://127.0.0.1:{port}")
        sent = [np.full(n, n, np.float32) for n in range(64, 1000, 31)]   # frames of 256..4000 bytes
        for a in sent:   # weight sets, as the parameter service sends them
            send(push, Message(Kind.PARAMS, "params", len(a), {"version": 1, "staleness": 0}, {"w": a}))
        got = [recv(pull)[1].arrays["w"] for _ in sent]
    finally:
        push.close(0)
        pull.close(0)
    assert all(a.flags.aligned for a in got)
    for a, b in zip(got, sent):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("frames, words", [
    ([], "empty"),
    ([b"\xc1garbage"], "undecodable"),
    ([msgpack.packb("hello")], "not a non-empty array"),
    ([msgpack.packb([])], "not a non-empty array"),
    ([msgpack.packb([VERSION, "forward"])], "has 2 fields"),
    ([b"\x00" * (MAX_HEADER_BYTES + 1)], "exceeds"),
])
def test_garbage_headers_are_rejected(frames, words):
    with pytest.raises(ProtocolError, match=words):
        decode(frames)


def test_integer_map_keys_are_rejected():
    with pytest.raises(ProtocolError):
        decode([msgpack.packb({1: 2})])


def test_unknown_kind_and_missing_fields():
    f = frames_of()
    with pytest.raises(ProtocolError, match="unknown kind"):
        decode(with_header(f, k="launch_missiles"))
    with pytest.raises(ProtocolError, match="'id' is not int"):
        decode(with_header(f, i="seven"))
    with pytest.raises(ProtocolError, match="'id' is not int"):
        decode(with_header(f, i=True))   # msgpack's bool is not an id
    with pytest.raises(ProtocolError, match="'kind' is not str"):
        decode(with_header(f, k=["forward"]))


def test_version_mismatch_names_both_versions():
    with pytest.raises(VersionMismatch) as info:
        decode(with_header(frames_of(), v=VERSION + 1))
    assert str(VERSION) in str(info.value) and str(VERSION + 1) in str(info.value)
    # Another version's header may have other fields; the version is still what is reported.
    with pytest.raises(VersionMismatch, match=f"peer speaks {VERSION + 1}"):
        decode([msgpack.packb([VERSION + 1, "forward"])])
    # Version 1 headers were maps.
    with pytest.raises(VersionMismatch, match="peer speaks 1,"):
        decode([msgpack.packb({"v": 1, "k": "hello"})])


def test_truncated_frame_is_rejected():
    f = frames_of(x=np.ones((4, 4), np.float32))
    with pytest.raises(ProtocolError, match="needs 64"):
        decode([f[0], bytes(memoryview(f[1]))[:-4]])


def test_missing_and_extra_frames_are_rejected():
    f = frames_of(x=np.ones(3, np.float32))
    with pytest.raises(ProtocolError, match="frames follow"):
        decode(f[:1])
    with pytest.raises(ProtocolError, match="frames follow"):
        decode([*f, b"extra"])


def test_wrong_dtype_and_bad_shapes_are_rejected():
    f = frames_of(x=np.ones(4, np.float32))
    with pytest.raises(ProtocolError, match="not allowed"):
        decode(with_header(f, a=[["x", "object", [4]]]))
    with pytest.raises(ProtocolError, match="bad shape"):
        decode(with_header(f, a=[["x", "float32", [-4]]]))
    with pytest.raises(ProtocolError, match="bad shape"):
        decode(with_header(f, a=[["x", "float32", [1, 1, 1, 1, 4]]]))
    with pytest.raises(ProtocolError, match="needs"):  # dtype that changes the byte count
        decode(with_header(f, a=[["x", "float64", [4]]]))


def test_oversized_array_claim_is_rejected_before_allocation():
    f = frames_of(x=np.ones(4, np.float32))
    with pytest.raises(ProtocolError):
        decode(with_header(f, a=[["x", "float64", [2**40, 2**20]]]))


def test_random_headers_are_decoded_or_rejected_never_crash():
    """A seeded fuzz of the decoder: flipped bytes in a real header, and random msgpack where the
    header and its array specs go. Anything but a ProtocolError would crash a worker's loop."""
    import random

    rng = random.Random(0)
    good = encode(Message(Kind.FORWARD, "stage-1", 3, {"a": 1}, {"x": np.ones((4, 3), np.float32),
                                                                 "y": np.arange(4)}))
    head, frames = bytes(good[0]), [bytes(memoryview(f)) for f in good[1:]]

    def anything(depth=0):
        """A random msgpack value: scalars, and below depth 3 also lists, maps and array-spec look-alikes."""
        pick = rng.randrange(9 if depth < 3 else 6)
        if pick < 6:
            return [None, True, rng.randrange(-5, 2**40), rng.choice(["float32", "int64", "x"]), b"\x00", 1.5][pick]
        if pick == 6:
            return [anything(depth + 1) for _ in range(rng.randrange(4))]
        if pick == 7:
            return {"k": anything(depth + 1)}
        return [rng.choice(["x", "y", 3]), anything(depth + 1), [rng.randrange(-2, 5) for _ in range(rng.randrange(3))]]

    decoded = 0
    for _ in range(20000):
        how = rng.randrange(3)
        if how == 0:
            h = bytearray(head)
            for _ in range(rng.randrange(1, 4)):
                h[rng.randrange(len(h))] = rng.randrange(256)
        elif how == 1:
            h = msgpack.packb([VERSION, rng.choice(["forward", "grad", 5, None]), rng.choice(["s", 1]),
                               rng.choice([1, True, "x"]), rng.choice([{}, [], {"a": 1}]),
                               [anything(1) for _ in range(rng.randrange(3))]])
        else:
            h = msgpack.packb(anything())
        try:
            decode([bytes(h), *frames[:rng.randrange(3)]])
            decoded += 1
        except ProtocolError:
            pass
    assert 0 < decoded < 20000   # both outcomes were exercised
