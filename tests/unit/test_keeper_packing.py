"""The keeper's own msgpack (gaffer.agent.keeper.packing) held to the msgpack package, byte for byte."""

from __future__ import annotations

import math

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gaffer.agent.keeper.packing import MAX_DEPTH, UnpackError, pack, unpack
from budget import examples

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(1 << 63), max_value=(1 << 64) - 1)
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary()
)
# the sizes where msgpack changes form (fix -> 8 -> 16 -> 32 bits), which small examples miss
LONG = [0, 15, 16, 31, 32, 255, 256, 65535, 65536]
INTEGERS = [127, 128, 255, 256, 65535, 65536, (1 << 32) - 1, 1 << 32, -32, -33, -128, -129,
            -32768, -32769, -(1 << 31), -(1 << 31) - 1, -(1 << 63)]
EDGES = st.sampled_from(INTEGERS) | st.sampled_from(LONG[:7]).flatmap(
    lambda n: st.sampled_from(["a" * n, b"b" * n, [0] * n, {str(i): i for i in range(n)}])
)
VALUES = st.recursive(
    SCALARS | EDGES,
    lambda inner: st.lists(inner, max_size=20) | st.dictionaries(st.text(max_size=8), inner, max_size=20),
    max_leaves=30,
)


@pytest.mark.parametrize("length", LONG)
@pytest.mark.parametrize("kind", [str, bytes, list, dict])
def test_every_length_form_is_msgpacks(kind, length):
    """Strings, bytes, arrays and maps at each length where msgpack changes form pack as msgpack does."""
    value = {str: "a" * length, bytes: b"b" * length, list: [0] * length,
             dict: {str(i): i for i in range(length)}}[kind]
    data = pack(value)
    assert data == msgpack.packb(value, use_bin_type=True)
    assert unpack(data) == value


@settings(max_examples=examples(300), deadline=None)
@given(VALUES)
def test_pack_gives_msgpacks_bytes_and_unpack_reads_them_back(value):
    """Any body value packs to msgpack.packb's exact bytes (protocol 1 unchanged) and unpacks to itself."""
    data = pack(value)
    assert data == msgpack.packb(value, use_bin_type=True)
    assert unpack(data) == value


@settings(max_examples=examples(300), deadline=None)
@given(st.binary(max_size=64) | VALUES.map(lambda v: msgpack.packb(v, use_bin_type=True)).flatmap(
    lambda data: st.integers(0, len(data)).map(lambda cut: data[:cut])))
def test_unpack_reads_what_msgpack_reads_and_refuses_the_rest_with_unpack_error(data):
    """On any bytes (random, or a valid body cut short) unpack agrees with msgpack.unpackb or
    raises UnpackError, never another exception; it refuses only what bodies never hold."""
    try:
        theirs = msgpack.unpackb(data, raw=False)
    except Exception:  # msgpack raises several unrelated types for bad input
        theirs = UnpackError
    try:
        ours = unpack(data)
    except UnpackError:
        ours = UnpackError
    if ours is UnpackError and theirs is not UnpackError:
        assert _holds_extension(theirs) or _depth(theirs) > MAX_DEPTH, (data, theirs)
    elif ours is not UnpackError:
        assert theirs is not UnpackError and _same(ours, theirs)


@pytest.mark.parametrize(
    "data, says",
    [
        (b"\xd4\x01\x00", "type byte 0xd4 is not used"),
        (b"\x81\x01\x02", "map key must be a string, got int"),
        (b"\xda\x00\x05ab", "truncated: 5 bytes needed at offset 3, 2 left"),
        (b"", "truncated: a value is missing"),
        (b"\x92\x01", "truncated: 2 elements announced at offset 1, 1 bytes left"),
        (b"\xc0\xc0", "1 bytes after the value"),
        (b"\xa2\xff\xfe", "not valid UTF-8"),
        (b"\x91" * (MAX_DEPTH + 1) + b"\xc0", f"nested deeper than {MAX_DEPTH} levels"),
        (b"\xdd\xff\xff\xff\xff", "truncated: 4294967295 elements announced"),
    ],
)
def test_unpack_names_what_is_wrong_in_one_line(data, says):
    """Refusals are UnpackError with a one-line reason (the keeper answers it as invalid_request)."""
    with pytest.raises(UnpackError) as caught:
        unpack(data)
    assert says in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize("value, error", [({1, 2}, TypeError), (1 << 64, OverflowError), (-(1 << 63) - 1, OverflowError)])
def test_pack_refuses_what_msgpack_cannot_carry(value, error):
    """A set or an integer beyond 64 bits is a TypeError/OverflowError, as in msgpack."""
    with pytest.raises(error):
        pack(value)


def _holds_extension(value) -> bool:
    if isinstance(value, (msgpack.ExtType, msgpack.Timestamp)):
        return True
    if isinstance(value, list):
        return any(_holds_extension(item) for item in value)
    if isinstance(value, dict):
        return any(_holds_extension(k) or _holds_extension(v) for k, v in value.items())
    return False


def _depth(value) -> int:
    if isinstance(value, list):
        return 1 + max((_depth(item) for item in value), default=0)
    if isinstance(value, dict):
        return 1 + max((_depth(item) for item in value.values()), default=0)
    return 0


def _same(ours, theirs) -> bool:
    """Equal, with NaN equal to NaN (a float32/64 NaN unpacks on both sides)."""
    if isinstance(ours, float) and isinstance(theirs, float):
        return ours == theirs or (math.isnan(ours) and math.isnan(theirs))
    if isinstance(ours, list) and isinstance(theirs, list):
        return len(ours) == len(theirs) and all(_same(a, b) for a, b in zip(ours, theirs))
    if isinstance(ours, dict) and isinstance(theirs, dict):
        return ours.keys() == theirs.keys() and all(_same(ours[k], theirs[k]) for k in ours)
    return type(ours) is type(theirs) and ours == theirs
