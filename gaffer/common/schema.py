"""A tiny strict schema checker for wire bodies: plain functions over plain data.

Why not a library: the controller checks about a thousand heartbeats a second (benchmarks many
more), the rules must be exact (``True`` is not an integer, an unknown field is an error, every
length is bounded) and a failure must name the field path. A schema here is a ``Check``: a
function that returns None when the value fits and raises ``Invalid`` when it does not. Checks
are built once, at import time, by the constructors below, so checking a good message costs one
call per field and allocates nothing; the path of a failure is collected only while its
``Invalid`` unwinds (each container appends its segment on the way out).

Every check carries ``expect``, a phrase such as ``"an integer >= 0"``, so a failure reads
``must be an integer >= 0 or null, got "x"`` whatever combination produced it.
"""

from __future__ import annotations

import json
import math
import re
from itertools import chain
from typing import Any, Callable, Iterable, Mapping, Pattern

Check = Callable[[Any], None]

MAX_DEPTH = 32
_SIMPLE_KEY = re.compile(r"[A-Za-z0-9_-]{1,64}\Z")


class Invalid(Exception):
    """A value does not fit its check; ``path`` holds segments innermost first."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.path: list[str] = []

    def where(self) -> str:
        """The field path from the root, like ``.instances[3].pid`` (empty at the root)."""
        return "".join(reversed(self.path))

    def __str__(self) -> str:
        where = self.where()
        return f"{where}: {self.message}" if where else self.message


def describe(value: Any) -> str:
    """A short, log-safe rendering of a value for error messages (never its whole content)."""
    if value is None:
        return "null"
    if value is True or value is False:
        return "true" if value else "false"
    kind = type(value)
    if kind is int:
        bits = value.bit_length()
        return str(value) if bits <= 64 else f"an integer of {bits} bits"
    if kind is float:
        return repr(value)
    if kind is str:
        if len(value) <= 40:
            return json.dumps(value)
        return f"a string of {len(value)} characters"
    if kind is bytes:
        return f"bytes ({len(value)})"
    if kind is list or kind is tuple:
        return f"a list of {len(value)} items"
    if kind is dict:
        return f"a map of {len(value)} entries"
    return f"a {kind.__name__}"


def key_segment(key: Any) -> str:
    """The path segment for a map key: ``.name`` when plain, ``["a b"]`` otherwise."""
    if type(key) is str and _SIMPLE_KEY.match(key):
        return "." + key
    return f"[{describe(key)}]"


def _fail(check: Check, value: Any) -> Invalid:
    return Invalid(f"must be {check.expect}, got {describe(value)}")  # type: ignore[attr-defined]


def _named(check: Check, expect: str) -> Check:
    check.expect = expect  # type: ignore[attr-defined]
    return check


def integer(low: int = 0, high: int = 2**63 - 1) -> Check:
    """An exact int (never a bool) in ``low..high``."""
    expect = f"an integer >= {low}" if high == 2**63 - 1 else f"an integer in {low}..{high}"

    def check(value: Any) -> None:
        if type(value) is not int or not low <= value <= high:
            raise _fail(check, value)

    return _named(check, expect)


def number(low: float = 0.0, high: float = math.inf) -> Check:
    """A finite int or float (never a bool, NaN or infinity) in ``low..high``."""
    expect = f"a finite number >= {low:g}" if high == math.inf else f"a number in {low:g}..{high:g}"

    def check(value: Any) -> None:
        kind = type(value)
        if (kind is not float and kind is not int) or not low <= value <= high or value == math.inf:
            raise _fail(check, value)

    return _named(check, expect)


def boolean() -> Check:
    def check(value: Any) -> None:
        if value is not True and value is not False:
            raise _fail(check, value)

    return _named(check, "true or false")


def string(max_len: int, min_len: int = 0, pattern: Pattern[str] | None = None,
           expect: str = "") -> Check:
    """A str of ``min_len..max_len`` characters, matching ``pattern`` when given."""
    if not expect:
        size = f"at most {max_len} characters"
        expect = f"a string of {size}" if min_len == 0 else f"a non-empty string of {size}"
    match = pattern.match if pattern is not None else None

    def check(value: Any) -> None:
        if type(value) is not str or not min_len <= len(value) <= max_len:
            raise _fail(check, value)
        if match is not None and match(value) is None:
            raise _fail(check, value)

    return _named(check, expect)


def one_of(values: Iterable[str]) -> Check:
    """One of a fixed set of strings."""
    allowed = tuple(values)
    members = frozenset(allowed)

    def check(value: Any) -> None:
        if type(value) is not str or value not in members:
            raise _fail(check, value)

    return _named(check, "one of " + ", ".join(json.dumps(v) for v in allowed))


def nullable(inner: Check) -> Check:
    def check(value: Any) -> None:
        if value is None:
            return
        try:
            inner(value)
        except Invalid as exc:
            if exc.path:
                raise
            raise _fail(check, value) from None

    return _named(check, f"{inner.expect} or null")  # type: ignore[attr-defined]


def either(first: Check, second: Check) -> Check:
    """A value that fits ``first`` or ``second`` (leaf checks only: the message names both)."""

    def check(value: Any) -> None:
        try:
            first(value)
        except Invalid:
            try:
                second(value)
            except Invalid:
                raise _fail(check, value) from None

    return _named(check, f"{first.expect} or {second.expect}")  # type: ignore[attr-defined]


def list_of(item: Check, max_len: int, min_len: int = 0) -> Check:
    """A list (a tuple too, for senders) of ``min_len..max_len`` items, each fitting ``item``."""
    if min_len == max_len:
        expect = f"a list of exactly {max_len} items"
    else:
        expect = f"a list of at most {max_len} items"

    def check(value: Any) -> None:
        kind = type(value)
        if (kind is not list and kind is not tuple) or not min_len <= len(value) <= max_len:
            raise _fail(check, value)
        for index, element in enumerate(value):
            try:
                item(element)
            except Invalid as exc:
                exc.path.append(f"[{index}]")
                raise

    return _named(check, expect)


def map_of(key: Check, value_check: Check, max_len: int) -> Check:
    """A map of at most ``max_len`` entries, keys fitting ``key``, values ``value_check``."""
    key_expect = key.expect  # type: ignore[attr-defined]

    def check(value: Any) -> None:
        if type(value) is not dict or len(value) > max_len:
            raise _fail(check, value)
        for name, element in value.items():
            try:
                key(name)
            except Invalid:
                raise Invalid(f"keys must be {key_expect}, got {describe(name)}") from None
            try:
                value_check(element)
            except Invalid as exc:
                exc.path.append(key_segment(name))
                raise

    return _named(check, f"a map of at most {max_len} entries")


def struct(fields: Mapping[str, Check], optional: Mapping[str, Check] | None = None,
           post: Check | None = None) -> Check:
    """A map with exactly these fields (plus any of ``optional``); ``post`` checks across fields.

    Unknown fields are errors, so a typo or a newer sender's field is caught, not ignored.
    """
    required = tuple(fields.items())
    extra = dict(optional or {})
    names = frozenset(fields)
    known = (*fields, *extra)
    count = len(required)

    def check(value: Any) -> None:
        if type(value) is not dict:
            raise _fail(check, value)
        for name, field_check in required:
            try:
                element = value[name]
            except KeyError:
                raise _shape_error(value, known, extra) from None
            try:
                field_check(element)
            except Invalid as exc:
                exc.path.append("." + name)
                raise
        if len(value) != count:
            _check_optional(value, names, known, extra)
        if post is not None:
            post(value)

    return _named(check, "a map")


def _check_optional(value: dict, names: frozenset[str], known: tuple[str, ...],
                    extra: dict[str, Check]) -> None:
    for name, element in value.items():
        if name in names:
            continue
        field_check = extra.get(name) if type(name) is str else None
        if field_check is None:
            raise _shape_error(value, known, extra)
        try:
            field_check(element)
        except Invalid as exc:
            exc.path.append("." + name)
            raise


def _shape_error(value: dict, known: tuple[str, ...], extra: dict[str, Check]) -> Invalid:
    for name in known:
        if name not in value and name not in extra:
            error = Invalid("is required")
            error.path.append("." + name)
            return error
    for name in value:
        if name not in known:
            import difflib  # only ever on a refusal: kept out of every start-up

            hint = difflib.get_close_matches(name, known, n=1) if type(name) is str else []
            error = Invalid("unknown field" + (f" (did you mean {hint[0]!r}?)" if hint else ""))
            error.path.append(key_segment(name))
            return error
    return Invalid("does not fit")  # unreachable for dicts: kept so the caller always raises


def plain_value(value: Any) -> None:
    """Any msgpack-native value: null, bool, number, str, bytes, list, map with str keys.

    Used for opaque payloads (request arguments, results, event data): their meaning is checked
    by whoever acts on them, but they must be plain data, nest at most ``MAX_DEPTH`` levels, and
    encode the same on every side (no extension types, no non-string keys).
    """
    _plain(value, 0)


plain_value.expect = "plain data"  # type: ignore[attr-defined]


_SCALARS = frozenset({str, int, float, bool, bytes, type(None)})


class PlainRows(list):  # type: ignore[type-arg]
    """A list of maps the controller built from plain parts only (the ``ps`` rows of
    ``row_cache.py``: fields of reports the wire schema checked, numbers and None), which
    ``plain_value`` takes as checked: walking 10,000 rows again cost as much as packing them."""


class Prepacked:
    """A value already encoded as msgpack: ``protocol.encode`` writes ``packed()`` where the
    value goes (a reply's ``result``), and ``plain_value`` takes it as checked (its maker built
    it from plain parts). The ``ps`` answer (``controller/row_bytes.py``): packing 10,000 rows
    on every listing cost more than all the rest the controller does for one."""

    def packed(self) -> bytes:
        raise NotImplementedError


def _plain(value: Any, depth: int) -> None:
    """Scalars inside a container are checked inline, not by a call each: a listing of 10,000
    rows of 15 fields is 150,000 values, and a call per value cost more than packing them."""
    kind = type(value)
    if kind in _SCALARS or kind is PlainRows:
        return
    if depth >= MAX_DEPTH:
        raise Invalid(f"nests deeper than {MAX_DEPTH} levels")
    scalars = _SCALARS
    if kind is dict:
        for name, element in value.items():
            if type(name) is not str:
                raise Invalid(f"map keys must be strings, got {describe(name)}")
            if type(element) in scalars:
                continue
            try:
                _plain(element, depth + 1)
            except Invalid as exc:
                exc.path.append(key_segment(name))
                raise
    elif kind is list or kind is tuple:
        if depth + 1 < MAX_DEPTH and _flat_maps(value):
            return
        for index, element in enumerate(value):
            if type(element) in scalars:
                continue
            try:
                _plain(element, depth + 1)
            except Invalid as exc:
                exc.path.append(f"[{index}]")
                raise
    elif not isinstance(value, Prepacked):
        raise Invalid(
            "must be plain data (null, boolean, number, string, bytes, list, map with string "
            f"keys), got {describe(value)}"
        )


_MAPS = frozenset({dict})


def _flat_maps(items: list[Any] | tuple[Any, ...]) -> bool:
    """Whether ``items`` are all maps of string keys and scalar values (a listing's rows), found
    by loops in C over all of them at once: a client checking a listing of 10,000 rows (160,000
    values) spent longer here than unpacking it. The keys are looked at once each (a set of
    them all): a key equal to a string but not one could hide behind that string only if it
    were a ``str`` subclass made in this process, never one unpacked from the wire. False sends
    the caller to the loop that names what is wrong."""
    if not items or not _MAPS.issuperset(map(type, items)):
        return False
    return (all(type(key) is str for key in set().union(*items))
            and _SCALARS.issuperset(map(type, chain.from_iterable(map(dict.values, items)))))


def plain_map(max_len: int) -> Check:
    """A map with str keys and plain values (``plain_value``)."""

    def check(value: Any) -> None:
        if type(value) is not dict or len(value) > max_len:
            raise _fail(check, value)
        _plain(value, 0)

    return _named(check, f"a map of at most {max_len} entries")
