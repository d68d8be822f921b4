"""``ps`` answers written from rows kept encoded, so a listing encodes almost nothing.

Encoding the 10,000 rows of a listing (msgpack for the ZeroMQ reply, JSON for ``GET
/v1/instances``) cost more than building them, on every listing, although nearly all of a row
changes only when ``RowCache`` makes its rows again. ``RowBytes`` keeps, per encoding and per
placed row, the row written up to its ``age`` (``statics``): the kept row's fields and its
PORT (written again when the rows were made again or a template's PORT rule changed), then
cpu and memory (written again when the samples were read again). A listing writes only what
moves with the clock between the kept parts: ``age`` (one per node's push time) and
``uptime`` (one per row); and the pending rows, whole (few; made fresh, as ``RowCache`` makes
them). Each encoding is kept only once something asked for it.

The answer is byte for byte what msgpack and the HTTP side's ``json.dumps`` write for the rows
(or page) ``Api.ps`` gives (``tests/unit/test_row_bytes.py`` holds it to that after any
changes): a map is a header counting its entries, then each key and value in order, and
``age`` and ``uptime`` are every row's last two fields, so the kept part is a prefix of the
row. A page (``limit``, ``continue``) is found by bisection over the kept keys instead of a
scan, for a token of the shape ``ps`` gives (``fast_token``); ``Api`` answers any other as
before.

    RowCache.placed() ──► statics (per row, kept per encoding) ─┐
    RowCache.pending() ─► whole rows (each listing) ────────────┼─► the answer, in key order
    the clocks ─────────► age (per push time), uptime (per row) ─┘
"""

from __future__ import annotations

import json
import struct
from bisect import bisect_right
from itertools import chain
from operator import add
from typing import Any, Iterable, Sequence

import msgpack

from gaffer.common.ports import instance_port
from gaffer.common.protocol import array_header, map_header
from gaffer.common.schema import Prepacked
from gaffer.controller.instance_rows import Placed
from gaffer.controller.paging import encode_token
from gaffer.controller.row_cache import Reading, RowCache, port_rule

MSGPACK = "msgpack"
JSON = "json"
Key = tuple[Any, ...]
Piece = tuple[int, int] | tuple[Key, dict[str, Any]]
"""Rows of an answer: ``(a, b)`` the kept rows a..b-1, or one pending ``(key, row)``."""

_pack = msgpack.Packer(use_bin_type=True).pack
_f64 = struct.Struct(">d").pack


def fast_token(after: Sequence[Any]) -> bool:
    """Whether a decoded ``continue`` token has the shape of a ``ps`` key, ``[template,
    [0, ordinal] | [1, name], node]``: only such a token compares with every key, so the rows
    after it are found by bisection."""
    if len(after) != 3 or type(after[0]) is not str or type(after[2]) is not str:
        return False
    ordinal = after[1]
    return (type(ordinal) is list and len(ordinal) == 2
            and ((ordinal[0] == 0 and type(ordinal[0]) is int and type(ordinal[1]) is int)
                 or (ordinal[0] == 1 and type(ordinal[0]) is int and type(ordinal[1]) is str)))


class _Msgpack:
    """A row's parts as msgpack writes them."""

    MID_NONE = b"\xc0" + _pack("mem") + b"\xc0" + _pack("age")
    _CPU, _MEM, _AGE, _UPTIME = (_pack(key) for key in ("cpu", "mem", "age", "uptime"))

    def head(self, row: dict[str, Any], port: int | None) -> bytes:
        """``row`` and its ``port``, opening a map of all its fields, up to the key ``cpu``."""
        packed = _pack({**row, "port": port})
        return map_header(len(row) + 5) + packed[len(map_header(len(row) + 1)):] + self._CPU

    def mid(self, reading: Reading) -> bytes:
        if reading is None:
            return self.MID_NONE
        return _pack(reading[0]) + self._MEM + _pack(reading[1]) + self._AGE

    def age(self, age: float | None) -> bytes:
        return _pack(age) + self._UPTIME

    def uptimes(self, starts: Iterable[float | None], wall_now: float) -> list[bytes]:
        """Each row's ``uptime`` (None for a start of None), ending the row."""
        return [b"\xc0" if start is None else b"\xcb" + _f64(round(wall_now - start, 3)) for start in starts]

    def whole(self, row: dict[str, Any]) -> bytes:
        return _pack(row)

    def answer(self, parts: list[Any], count: int, token: str | None, paged: bool) -> bytes:
        """The rows as ``ps`` answers them: the list, or the page ``{"items", "continue"}``."""
        if not paged:
            parts.insert(0, array_header(count))
            return b"".join(parts)
        parts.insert(0, b"\x82" + _pack("items") + array_header(count))
        parts.append(_pack("continue") + _pack(token))
        return b"".join(parts)


_dumps = json.JSONEncoder(separators=(",", ":")).encode
"""As the HTTP side's ``handlers.dumps`` writes plain data (``json.dumps`` with these
separators, without making an encoder per row)."""


class _Json:
    """A row's parts as JSON: each row ends with a comma, dropped after the last. Floats are
    finite here (the wire's numbers are, and clock differences of them), which JSON writes
    as ``repr`` does."""

    MID_NONE = 'null,"mem":null,"age":'

    def head(self, row: dict[str, Any], port: int | None) -> str:
        return _dumps({**row, "port": port})[:-1] + ',"cpu":'

    def mid(self, reading: Reading) -> str:
        if reading is None:
            return self.MID_NONE
        return f'{reading[0]!r},"mem":{reading[1]!r},"age":'

    def age(self, age: float | None) -> str:
        return 'null,"uptime":' if age is None else f'{age!r},"uptime":'

    def uptimes(self, starts: Iterable[float | None], wall_now: float) -> list[str]:
        return ["null}," if start is None else f"{round(wall_now - start, 3)!r}}}," for start in starts]

    def whole(self, row: dict[str, Any]) -> str:
        return _dumps(row) + ","

    def answer(self, parts: list[Any], count: int, token: str | None, paged: bool) -> str:
        """HTTP's listing, always ``{"items", "continue"}`` (``continue`` null unpaged)."""
        if parts:
            parts[-1] = parts[-1][:-1]
        parts.insert(0, '{"items":[')
        parts.append('],"continue":' + _dumps(token) + "}")
        return "".join(parts)


class _Form:
    """One encoding's kept part of every placed row, and what it was written from."""

    def __init__(self, codec: _Msgpack | _Json) -> None:
        self.codec = codec
        self.statics: list[Any] = []
        """Per kept row: its fields up to ``age`` (the head, then the sample's part)."""
        self.tails: list[int] = []
        """Per kept row: the length of its sample's part, so new samples replace only that
        (the heads are not kept apart: they would double what is kept)."""
        self.layout_of = -1
        self.sampled_of = -1


class RowBytes:
    """``ps`` answers from rows kept encoded (see the module's docstring)."""

    def __init__(self, rows: RowCache, cluster: Placed) -> None:
        self._rows = rows
        self._cluster = cluster
        self._entries: list[tuple[Key, dict[str, Any]]] = []
        self._readings: list[Reading] = []
        self._keys: list[Key] = []
        self._ranges: dict[str, tuple[int, int]] = {}
        self._starts: list[float | None] = []
        self._pushed: list[float | None] = []
        self._rules: dict[str, Any] | None = None
        self._layout = 0
        """Bumped when the kept rows were made again or a PORT rule changed."""
        self._sampled = 0
        """Bumped when the samples were read again."""
        self._forms = {MSGPACK: _Form(_Msgpack()), JSON: _Form(_Json())}
        self.encodes = 0
        """Times an encoding's kept parts were written (every row's, or every row's sample
        part): a listing with nothing changed writes none."""

    def answer(self, name: str | None, limit: int | None, after: list[Any] | None,
               wall_now: float, loop_now: float) -> PsAnswer:
        """The ``ps`` answer for template ``name`` (or all), ``limit`` rows after the key
        ``after`` (a ``fast_token``) or all, at these clocks: written when it is sent."""
        return PsAnswer(self, (name, limit, after, wall_now, loop_now))

    def write(self, encoding: str, name: str | None, limit: int | None, after: list[Any] | None,
              wall_now: float, loop_now: float) -> Any:
        """The answer in ``encoding`` (MSGPACK: bytes of the result; JSON: HTTP's listing)."""
        form = self._current(encoding)
        keys = self._keys
        low, high = (0, len(keys)) if name is None else self._ranges.get(name, (0, 0))
        pending = self._rows.pending(name, wall_now, loop_now)
        if after is not None:
            mark = (after[0], tuple(after[1]), after[2])
            low = bisect_right(keys, mark, low, high)
            pending = [item for item in pending if item[0] > mark]
        pieces = _merge(keys, low, high, pending)
        total = sum(_size(piece) for piece in pieces)
        token = None
        if limit is not None and total > limit:
            pieces = _cut(pieces, limit)
            last = pieces[-1]
            token = encode_token(list(keys[last[1] - 1] if type(last[0]) is int else last[0]))
        parts: list[Any] = []
        for piece in pieces:
            if type(piece[0]) is int:
                parts += self._placed(form, piece[0], piece[1], wall_now, loop_now)  # type: ignore[arg-type]
            else:
                parts.append(form.codec.whole(piece[1]))  # type: ignore[arg-type]
        count = min(total, limit) if limit is not None else total
        return form.codec.answer(parts, count, token, limit is not None)

    def _placed(self, form: _Form, low: int, high: int, wall_now: float, loop_now: float) -> Iterable[Any]:
        """Kept rows ``low``..``high``-1, written: the kept part, age and uptime of each."""
        codec = form.codec
        pushed = self._pushed[low:high]
        ages = {at: codec.age(None if at is None else round(max(0.0, loop_now - at), 3)) for at in set(pushed)}
        uptimes = codec.uptimes(self._starts[low:high], wall_now)
        return chain.from_iterable(zip(form.statics[low:high], map(ages.__getitem__, pushed), uptimes))

    def _current(self, encoding: str) -> _Form:
        """``encoding``'s kept parts, written again where what they hold changed."""
        entries, readings = self._rows.placed()
        if entries is not self._entries:
            self._entries = entries
            self._keys = [key for key, _ in entries]
            self._ranges = _ranges(self._keys)
            self._starts = [row["started_at"] if row["started_at"] and row["pid"] else None for _, row in entries]
            self._rules = None
        rules: dict[str, Any] = {}
        templates = self._cluster.templates
        for template in self._ranges:
            port_rule(rules, templates, template)
        if rules != self._rules:
            self._rules = rules
            self._layout += 1
        if readings is not self._readings:
            self._readings = readings
            self._pushed = [None if reading is None else reading[2] for reading in readings]
            self._sampled += 1
        form = self._forms[encoding]
        codec = form.codec
        if form.layout_of != self._layout:
            heads = [codec.head(row, _port(rules[row["template"]], row["ordinal"])) for _, row in entries]
            mids = list(map(codec.mid, readings))
            form.statics = list(map(add, heads, mids))
        elif form.sampled_of != self._sampled:
            mids = list(map(codec.mid, readings))
            form.statics = [static[:len(static) - tail] + mid
                            for static, tail, mid in zip(form.statics, form.tails, mids)]
        else:
            return form
        form.tails = list(map(len, mids))
        form.layout_of, form.sampled_of = self._layout, self._sampled
        self.encodes += 1
        return form


class PsAnswer(Prepacked):
    """One ``ps`` answer, written when it is sent: ``packed`` for the ZeroMQ reply,
    ``listing_json`` for HTTP, ``value`` for a caller that wants the rows. Written from the
    state at that moment, which is the state when it was made: both servers write it before
    their loop runs anything else."""

    __slots__ = ("_rows", "_args")

    def __init__(self, rows: RowBytes, args: tuple[Any, ...]) -> None:
        self._rows = rows
        self._args = args

    def packed(self) -> bytes:
        return self._rows.write(MSGPACK, *self._args)  # type: ignore[no-any-return]

    def listing_json(self) -> str:
        """HTTP's listing: ``{"items": rows, "continue": token or null}``, as JSON."""
        return self._rows.write(JSON, *self._args)  # type: ignore[no-any-return]

    def value(self) -> Any:
        """What ``Api.ps`` gives: the rows, or the page."""
        return msgpack.unpackb(self.packed(), raw=False)


def _port(rule: Any, ordinal: Any) -> int | None:
    return instance_port(rule, ordinal) if rule is not None and type(ordinal) is int else None


def _ranges(keys: list[Key]) -> dict[str, tuple[int, int]]:
    """Where each template's rows are (keys come by template)."""
    ranges: dict[str, tuple[int, int]] = {}
    start = 0
    for index in range(1, len(keys) + 1):
        if index == len(keys) or keys[index][0] != keys[start][0]:
            ranges[keys[start][0]] = (start, index)
            start = index
    return ranges


def _merge(keys: list[Key], low: int, high: int, pending: list[tuple[Key, dict[str, Any]]]) -> list[Piece]:
    """Kept rows ``low``..``high``-1 and the pending rows (in key order) as one key order."""
    pieces: list[Piece] = []
    at = low
    for item in pending:
        where = bisect_right(keys, item[0], at, high)
        if where > at:
            pieces.append((at, where))
        pieces.append(item)
        at = where
    if high > at:
        pieces.append((at, high))
    return pieces


def _size(piece: Piece) -> int:
    return piece[1] - piece[0] if type(piece[0]) is int else 1  # type: ignore[operator]


def _cut(pieces: list[Piece], limit: int) -> list[Piece]:
    """The first ``limit`` rows of ``pieces``."""
    out: list[Piece] = []
    left = limit
    for piece in pieces:
        if left <= 0:
            break
        if type(piece[0]) is int:
            take = min(_size(piece), left)
            out.append((piece[0], piece[0] + take))  # type: ignore[operator]
            left -= take
        else:
            out.append(piece)
            left -= 1
    return out
