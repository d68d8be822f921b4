"""The arguments of a request, checked one by one: type, length, pattern and range.

A request's ``args`` arrive as plain data: the wire schema (``protocol``) has bounded every
string at 64 KiB and the nesting, but nothing about what an argument means. Each function here
takes the ``args`` map and a key, and returns the value or raises ``InvalidArgument`` naming
the argument and what is wrong, in one line that never echoes a long value back. The
controller's operations (``controller/api.py``) and the agent's commands (``agent/commands.py``)
use the same checks, so a value one side accepts the other does too.

Why each bound: a node name of 60,000 characters became a phantom node that nothing could
remove; a NaN wait made a loop that never ended (``now < NaN`` is always false); a count of
2**63 made the controller allocate until it died.
"""

from __future__ import annotations

import math
import re
from typing import Any

from gaffer.common.errors import InvalidArgument
from gaffer.common.limits import MAX_ARGS, MAX_COUNT, MAX_NAME, MAX_WAIT, NAME_RE, NAME_RULE

MISSING: Any = object()
MAX_SIGNAL = 16
"""Characters of a signal name ("SIGRTMIN+15" is the longest Linux has)."""
MAX_ARG_LENGTH = 65_536
INSTANCE_ID_RE = re.compile(
    r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}\.(?:[1-9][0-9]{0,%d}|run-[1-9][0-9]{0,18})\Z" % (len(str(MAX_COUNT)) - 1)
)
INSTANCE_ID_RULE = "an instance id <template>.<ordinal> (web.2, or web.run-1 for a one-off run)"
STREAMS = ("out", "err")


def _get(args: dict[str, Any], key: str, default: Any) -> Any:
    if key in args and args[key] is not None:
        return args[key]
    if default is MISSING:
        raise InvalidArgument(key, "is required")
    return default


def _show(value: Any) -> str:
    """A value for a message: short ones as they are, long ones by their size."""
    if isinstance(value, str):
        return repr(value) if len(value) <= 40 else f"a string of {len(value)} characters"
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, int):
        return str(value) if abs(value) < 10**20 else f"a number of {len(str(abs(value)))} digits"
    if isinstance(value, float):
        return repr(value)
    return f"a {type(value).__name__}"


def name(args: dict[str, Any], key: str = "name", default: Any = MISSING, what: str = "template") -> Any:
    """A template or node name (``NAME_RE``: at most 64 characters, no dots)."""
    value = _get(args, key, default)
    if value is default:
        return value
    if not isinstance(value, str):
        raise InvalidArgument(key, f"must be a {what} name (a string), got {_show(value)}")
    if not NAME_RE.match(value):
        raise InvalidArgument(key, f"{_show(value)} is not a {what} name: use {NAME_RULE}")
    return value


def node(args: dict[str, Any], key: str = "node", default: Any = MISSING) -> Any:
    return name(args, key, default, what="node")


def instance_id(args: dict[str, Any], key: str = "id", default: Any = MISSING) -> Any:
    """``<template>.<ordinal>`` with an ordinal 1..MAX_COUNT, or ``<template>.run-<n>``."""
    value = _get(args, key, default)
    if value is default:
        return value
    if not is_instance_id(value):
        raise InvalidArgument(key, f"must be {INSTANCE_ID_RULE}, got {_show(value)}")
    return value


def is_instance_id(value: Any) -> bool:
    if not isinstance(value, str) or not INSTANCE_ID_RE.match(value):
        return False
    ordinal = value.rpartition(".")[2]
    return ordinal.startswith("run-") or int(ordinal) <= MAX_COUNT


def target(args: dict[str, Any], key: str = "target") -> str:
    """A template name or an instance id."""
    value = _get(args, key, MISSING)
    if isinstance(value, str) and (NAME_RE.match(value) or is_instance_id(value)):
        return value
    raise InvalidArgument(key, f"must be a template name or {INSTANCE_ID_RULE}, got {_show(value)}")


def seconds(args: dict[str, Any], key: str, default: float, maximum: float = MAX_WAIT) -> float:
    """A finite number of seconds in 0..``maximum`` (never NaN or an infinity)."""
    value = _get(args, key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidArgument(key, f"must be a number of seconds, got {_show(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidArgument(key, f"must be a finite number of seconds, got {value!r}")
    if not 0 <= value <= maximum:
        raise InvalidArgument(key, f"must be a number of seconds in 0..{maximum:g}, got {_show(value)}")
    return float(value)


def integer(args: dict[str, Any], key: str, default: Any, low: int, high: int) -> int:
    value = _get(args, key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidArgument(key, f"must be an integer in {low}..{high}, got {_show(value)}")
    return value


def boolean(args: dict[str, Any], key: str, default: bool) -> bool:
    value = _get(args, key, default)
    if not isinstance(value, bool):
        raise InvalidArgument(key, f"must be true or false, got {_show(value)}")
    return value


def signal(args: dict[str, Any], key: str = "signal", default: Any = "TERM") -> str | int:
    """A signal name (at most 16 characters) or number; whether it exists is the caller's check
    (``parse_signal``), so the message says "unknown signal" rather than "bad argument"."""
    value = _get(args, key, default)
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InvalidArgument(key, f"must be a signal name or number, got {_show(value)}")
    if isinstance(value, str) and len(value) > MAX_SIGNAL:
        raise InvalidArgument(key, f"must be a signal name or number, got {_show(value)}")
    if isinstance(value, int) and not 0 < value < 1024:
        raise InvalidArgument(key, f"must be a signal name or number, got {_show(value)}")
    return value


def stream(args: dict[str, Any], key: str = "stream") -> str | None:
    """``out``, ``err``, or None for both."""
    value = args.get(key)
    if value is not None and value not in STREAMS:
        raise InvalidArgument(key, f"must be \"out\", \"err\" or null, got {_show(value)}")
    return value


def strings(args: dict[str, Any], key: str, max_items: int = MAX_ARGS) -> list[str] | None:
    """None, or a list of at most ``max_items`` strings without NUL bytes."""
    value = args.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or len(value) > max_items:
        raise InvalidArgument(key, f"must be a list of at most {max_items} strings, got {_show(value)}")
    for index, item in enumerate(value):
        if not isinstance(item, str) or "\0" in item or len(item) > MAX_ARG_LENGTH:
            raise InvalidArgument(
                f"{key}[{index}]", f"must be a string without NUL bytes, got {_show(item)}"
            )
    return value


def env(args: dict[str, Any], key: str = "env", max_items: int = MAX_ARGS) -> dict[str, str] | None:
    """None, or a map of at most ``max_items`` environment variables: each name non-empty,
    without ``=`` or NUL (the template's ``env`` rule), each value a string without NUL."""
    value = args.get(key)
    if value is None:
        return None
    if not isinstance(value, dict) or len(value) > max_items:
        raise InvalidArgument(key, f"must be a map of at most {max_items} variables, got {_show(value)}")
    for name_, item in value.items():
        if not isinstance(name_, str) or not name_ or "=" in name_ or "\0" in name_ or len(name_) > MAX_ARG_LENGTH:
            raise InvalidArgument(key, f"invalid variable name {_show(name_)}")
        if not isinstance(item, str) or "\0" in item or len(item) > MAX_ARG_LENGTH:
            raise InvalidArgument(f"{key}.{name_}", f"must be a string without NUL bytes, got {_show(item)}")
    return value


def data(args: dict[str, Any], key: str = "data") -> str | bytes:
    value = _get(args, key, MISSING)
    if not isinstance(value, (str, bytes)):
        raise InvalidArgument(key, f"must be a string or bytes, got {_show(value)}")
    return value


def count(args: dict[str, Any], key: str = "count") -> str | int:
    """A scale count: N, +N or -N as a string, or an integer (its range is checked by
    ``parse_scale`` and the controller's limits)."""
    value = _get(args, key, MISSING)
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InvalidArgument(key, f"must be N, +N or -N, got {_show(value)}")
    if isinstance(value, str) and len(value) > MAX_NAME:
        raise InvalidArgument(key, f"must be N, +N or -N, got {_show(value)}")
    return value
