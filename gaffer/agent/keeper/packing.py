"""The msgpack the keeper's frames carry, packed and unpacked in plain Python.

Why not the msgpack package: the keeper is a process of its own on every host and must stay
under 10 MB (issue 9, item 12), and msgpack's extension brings ``datetime`` with it, about
0.6 MB of resident memory for a few small maps a minute. Frame bodies only hold maps, lists,
strings, bytes, integers, booleans and None, which this module packs to the very bytes
``msgpack.packb(body, use_bin_type=True)`` gives (smallest form of each, as msgpack chooses
it) and unpacks as ``msgpack.unpackb(data, raw=False)`` does; ``tests/unit/test_keeper_packing.py``
holds both to msgpack itself with hypothesis, so protocol 1 stays byte for byte what it was.

Unpacking refuses, with ``UnpackError``, what a frame body never holds: extension types,
maps keyed by anything but str or bytes, nesting deeper than ``MAX_DEPTH``, invalid UTF-8,
a truncated value or bytes after it.
"""

from __future__ import annotations

import struct

TYPE_CHECKING = False  # typing itself is not imported: see the package docstring
if TYPE_CHECKING:
    from typing import Any

MAX_DEPTH = 32

_U8, _U16, _U32, _U64 = (struct.Struct(f) for f in ("!B", "!H", "!I", "!Q"))
_I8, _I16, _I32, _I64 = (struct.Struct(f) for f in ("!b", "!h", "!i", "!q"))
_F32, _F64 = struct.Struct("!f"), struct.Struct("!d")


class UnpackError(ValueError):
    """Bytes that are not one msgpack value of the kinds a frame body holds."""


def pack(value: Any) -> bytes:
    """``value`` as msgpack, byte for byte what ``msgpack.packb(value, use_bin_type=True)`` gives."""
    out = bytearray()
    _pack(value, out, 0)
    return bytes(out)


def _pack(value: Any, out: bytearray, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise ValueError(f"nested deeper than {MAX_DEPTH} levels")
    if value is None:
        out.append(0xC0)
    elif value is True or value is False:
        out.append(0xC3 if value else 0xC2)
    elif isinstance(value, int):
        _pack_int(value, out)
    elif isinstance(value, float):
        out.append(0xCB)
        out += _F64.pack(value)
    elif isinstance(value, str):
        data = value.encode()
        _pack_header(len(data), out, 0xA0, 32, (0xD9, 0xDA, 0xDB))
        out += data
    elif isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        _pack_header(len(data), out, 0, 0, (0xC4, 0xC5, 0xC6))
        out += data
    elif isinstance(value, (list, tuple)):
        _pack_header(len(value), out, 0x90, 16, (None, 0xDC, 0xDD))
        for item in value:
            _pack(item, out, depth + 1)
    elif isinstance(value, dict):
        _pack_header(len(value), out, 0x80, 16, (None, 0xDE, 0xDF))
        for key, item in value.items():
            _pack(key, out, depth + 1)
            _pack(item, out, depth + 1)
    else:
        raise TypeError(f"cannot pack a {type(value).__name__}")


def _pack_header(length: int, out: bytearray, fix: int, fix_limit: int, codes: tuple[int | None, ...]) -> None:
    """A length in the smallest form its kind has: inline in ``fix`` below ``fix_limit``, then
    in 8, 16 or 32 bits after the kind's code for that width (None: the kind has no such form)."""
    if length < fix_limit:
        out.append(fix | length)
        return
    for code, limit, size in zip(codes, (0x100, 0x10000, 0x100000000), (_U8, _U16, _U32)):
        if code is not None and length < limit:
            out.append(code)
            out += size.pack(length)
            return
    raise ValueError(f"a length of {length} does not fit msgpack's 32 bits")


def _pack_int(value: int, out: bytearray) -> None:
    if 0 <= value < 0x80 or -32 <= value < 0:
        out.append(value & 0xFF)
        return
    if value >= 0:
        forms = ((0x100, 0xCC, _U8), (0x10000, 0xCD, _U16), (0x100000000, 0xCE, _U32), (1 << 64, 0xCF, _U64))
        for limit, code, size in forms:
            if value < limit:
                out.append(code)
                out += size.pack(value)
                return
    else:
        forms = ((-0x80, 0xD0, _I8), (-0x8000, 0xD1, _I16), (-0x80000000, 0xD2, _I32), (-(1 << 63), 0xD3, _I64))
        for limit, code, size in forms:
            if value >= limit:
                out.append(code)
                out += size.pack(value)
                return
    raise OverflowError(f"integer {value} does not fit msgpack's 64 bits")


def unpack(data: bytes) -> Any:
    """The one msgpack value ``data`` holds, as ``msgpack.unpackb(data, raw=False)`` reads it."""
    value, end = _unpack(data, 0, 0)
    if end != len(data):
        raise UnpackError(f"{len(data) - end} bytes after the value")
    return value


# type byte -> struct of the scalar that follows it
_SCALARS = {
    0xCC: _U8, 0xCD: _U16, 0xCE: _U32, 0xCF: _U64,
    0xD0: _I8, 0xD1: _I16, 0xD2: _I32, 0xD3: _I64,
    0xCA: _F32, 0xCB: _F64,
}
# type byte -> (kind, struct of its length) for strings, bytes, arrays and maps
_SIZED = {
    0xD9: ("str", _U8), 0xDA: ("str", _U16), 0xDB: ("str", _U32),
    0xC4: ("bin", _U8), 0xC5: ("bin", _U16), 0xC6: ("bin", _U32),
    0xDC: ("array", _U16), 0xDD: ("array", _U32),
    0xDE: ("map", _U16), 0xDF: ("map", _U32),
}
_CONSTANTS = {0xC0: None, 0xC2: False, 0xC3: True}


def _unpack(data: bytes, pos: int, depth: int) -> tuple[Any, int]:
    if pos >= len(data):
        raise UnpackError("truncated: a value is missing")
    code = data[pos]
    pos += 1
    if code < 0x80:
        return code, pos
    if code >= 0xE0:
        return code - 0x100, pos
    if code in _CONSTANTS:
        return _CONSTANTS[code], pos
    scalar = _SCALARS.get(code)
    if scalar is not None:
        _need(data, pos, scalar.size)
        return scalar.unpack_from(data, pos)[0], pos + scalar.size
    if code <= 0x8F:
        kind, length = "map", code & 0x0F
    elif code <= 0x9F:
        kind, length = "array", code & 0x0F
    elif code <= 0xBF:
        kind, length = "str", code & 0x1F
    elif code in _SIZED:
        kind, size = _SIZED[code]
        _need(data, pos, size.size)
        length = size.unpack_from(data, pos)[0]
        pos += size.size
    else:
        raise UnpackError(f"type byte 0x{code:02x} is not used in frame bodies (extension or reserved)")
    if kind in ("str", "bin"):
        _need(data, pos, length)
        raw = data[pos : pos + length]
        if kind == "bin":
            return bytes(raw), pos + length
        try:
            return str(raw, "utf-8"), pos + length
        except UnicodeDecodeError as exc:
            raise UnpackError(f"a string is not valid UTF-8: {exc.reason}") from None
    if depth >= MAX_DEPTH:
        raise UnpackError(f"nested deeper than {MAX_DEPTH} levels")
    if len(data) - pos < length:  # every element takes a byte at least: refuse huge counts at once
        raise UnpackError(f"truncated: {length} elements announced at offset {pos}, {len(data) - pos} bytes left")
    if kind == "array":
        items = []
        for _ in range(length):
            item, pos = _unpack(data, pos, depth + 1)
            items.append(item)
        return items, pos
    mapping = {}
    for _ in range(length):
        key, pos = _unpack(data, pos, depth + 1)
        if not isinstance(key, (str, bytes)):
            raise UnpackError(f"a map key must be a string, got {type(key).__name__}")
        mapping[key], pos = _unpack(data, pos, depth + 1)
    return mapping, pos


def _need(data: bytes, pos: int, count: int) -> None:
    if len(data) - pos < count:
        raise UnpackError(f"truncated: {count} bytes needed at offset {pos}, {max(0, len(data) - pos)} left")
