"""The per-kind schema: every kind's valid messages decode; a missing or mistyped part is rejected at decode."""
import numpy as np
import pytest

from protocol import Kind, Message, ProtocolError, decode, encode
from protocol.kinds import CONTROL, DATA
from protocol.schema import FLOAT, PIXELS, SCHEMAS, Count

EXAMPLE = {str: "s", float: 0.5, int: 3, Count: 3, dict: {}, list: []}


def value(kind):
    return value(kind[0]) if isinstance(kind, tuple) else EXAMPLE[kind]


def array(kinds: str, rank: int, dtype=None) -> np.ndarray:
    return np.zeros((2,) * rank, dtype or (np.float32 if kinds == FLOAT else np.uint8 if kinds == PIXELS else np.int64))


def valid(kind: Kind) -> list[Message]:
    """One valid message per array variant of the kind (one with a made-up float array where any go)."""
    s = SCHEMAS[kind]
    meta = {name: value(k) for name, k in s.meta.items()}
    if s.any_floats:
        return [Message(kind, "stage-1", 1, meta, {"layer.W": array(FLOAT, 2)})]
    return [Message(kind, "stage-1", 1, dict(meta), {n: array(kinds, ranks[0]) for n, (kinds, ranks) in v.items()})
            for v in s.variants]


def roundtrip(msg: Message) -> Message:
    return decode([bytes(memoryview(f)) if not isinstance(f, bytes) else f for f in encode(msg)])


@pytest.mark.parametrize("kind", list(Kind))
def test_every_kind_has_a_schema_and_its_valid_messages_decode(kind):
    for msg in valid(kind):
        got = roundtrip(msg)
        assert got.kind is kind and set(got.arrays) == set(msg.arrays) and got.meta == msg.meta


@pytest.mark.parametrize("kind", [k for k in Kind if SCHEMAS[k].meta])
def test_a_missing_or_mistyped_meta_field_is_rejected(kind):
    for msg in valid(kind):
        for name, k in SCHEMAS[kind].meta.items():
            without = Message(kind, msg.src, msg.id, {n: v for n, v in msg.meta.items() if n != name}, msg.arrays)
            with pytest.raises(ProtocolError, match=f"lacks the field '{name}'"):
                roundtrip(without)
            wrong = "text" if value(k) != "s" else 7
            with pytest.raises(ProtocolError, match=f"field '{name}' is not"):
                roundtrip(Message(kind, msg.src, msg.id, {**msg.meta, name: wrong}, msg.arrays))


def test_counts_refuse_negative_numbers_and_booleans():
    base = valid(Kind.PULL)[0]
    for bad in (-1, True):
        with pytest.raises(ProtocolError, match="'have' is not a count"):
            roundtrip(Message(Kind.PULL, "box-1", 1, {**base.meta, "have": bad}))


@pytest.mark.parametrize("kind", [k for k in Kind if any(SCHEMAS[k].variants[0]) or len(SCHEMAS[k].variants) > 1])
def test_a_missing_extra_or_misshapen_array_is_rejected(kind):
    for msg in valid(kind):
        variant = next(v for v in SCHEMAS[kind].variants if set(v) == set(msg.arrays))
        for name, (kinds, ranks) in variant.items():
            others = {n: a for n, a in msg.arrays.items() if n != name}
            if set(others) not in [set(v) for v in SCHEMAS[kind].variants]:
                with pytest.raises(ProtocolError, match="carries arrays"):
                    roundtrip(Message(kind, msg.src, msg.id, msg.meta, others))
            bad_rank = max(ranks) + 1
            with pytest.raises(ProtocolError, match=f"'{name}' is .* of rank {bad_rank}"):
                roundtrip(Message(kind, msg.src, msg.id, msg.meta, {**others, name: array(kinds, bad_rank)}))
            wrong_dtype = np.int32 if kinds == FLOAT else np.float64
            with pytest.raises(ProtocolError, match=f"'{name}' is {np.dtype(wrong_dtype)}"):
                roundtrip(Message(kind, msg.src, msg.id, msg.meta,
                                  {**others, name: array(kinds, ranks[0], wrong_dtype)}))
        with pytest.raises(ProtocolError, match="carries arrays"):
            roundtrip(Message(kind, msg.src, msg.id, msg.meta, {**msg.arrays, "extra": array(FLOAT, 1)}))


@pytest.mark.parametrize("kind", [k for k in Kind if not SCHEMAS[k].any_floats and not any(SCHEMAS[k].variants[0])
                                  and len(SCHEMAS[k].variants) == 1])
def test_kinds_without_arrays_refuse_any(kind):
    msg = valid(kind)[0]
    with pytest.raises(ProtocolError, match="carries arrays"):
        roundtrip(Message(kind, msg.src, msg.id, msg.meta, {"x": array(FLOAT, 2)}))


@pytest.mark.parametrize("kind", [k for k in Kind if SCHEMAS[k].any_floats and SCHEMAS[k].any_kinds == FLOAT])
def test_parameter_kinds_take_float_arrays_only(kind):
    msg = valid(kind)[0]
    with pytest.raises(ProtocolError, match="not a float"):
        roundtrip(Message(kind, msg.src, msg.id, msg.meta, {"layer.W": array("iu", 2)}))


@pytest.mark.parametrize("kind", [k for k in Kind if SCHEMAS[k].any_kinds != FLOAT])
def test_full_state_kinds_take_counters_too(kind):
    """STATE and ASSIGN carry a full state: parameters and moments, and step counts as 0-d integers."""
    msg = valid(kind)[0]
    arrays = {"layer.W": array(FLOAT, 2), "opt.layer.t": np.array(7, np.int64)}
    assert roundtrip(Message(kind, msg.src, msg.id, msg.meta, arrays)).arrays["opt.layer.t"] == 7


def test_taken_is_a_bare_control_message():
    """Stage 1's credit for a training batch (per-link credit): only its id, on the control socket."""
    assert Kind.TAKEN in CONTROL and Kind.TAKEN not in DATA
    got = roundtrip(Message(Kind.TAKEN, "stage-1", 7))
    assert got.kind is Kind.TAKEN and got.id == 7 and got.meta == {} and got.arrays == {}
    with pytest.raises(ProtocolError, match="carries arrays"):
        roundtrip(Message(Kind.TAKEN, "stage-1", 7, {}, {"x": array(FLOAT, 2)}))
