"""The ``[health]`` table of a template: one readiness check, its settings and their bounds.

A template may carry one check (``exec``, ``http`` or ``tcp``). It is parsed here into a frozen
``HealthCheck``, with every problem named (``health.interval``, ``health.url``...) beside the
rest of the template's, so a user sees all their mistakes at once. What the agent does with it
is ``agent/health.py`` (the policy) and ``agent/probes.py`` (running one check).

Bounds, and why: an ``interval`` under 0.1 s would make the checks the agent's main work, a
``timeout`` longer than the ``interval`` would let checks of one instance pile up, and the
thresholds are counts of checks in a row (1..1000; a larger one could never be reached in a
useful time).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Any, Mapping
from urllib.parse import urlsplit

from gaffer.common.describe import describe as _kind
from gaffer.common.fieldcheck import Checker

CHECK_TYPES = ("exec", "http", "tcp")
MIN_INTERVAL = 0.1
MAX_INTERVAL = 86_400.0
MIN_TIMEOUT = 0.01
MAX_START_PERIOD = 86_400.0
MAX_THRESHOLD = 1_000
MAX_COMMAND = 4_096
"""Words of an exec check's command line, and characters of a URL or host."""
MAX_OUTPUT = 4_096
"""Bytes of a check's output kept (and carried by ``proc.<t>.ready`` / ``.unhealthy``)."""

_TARGETS = {"exec": ("command", "args"), "http": ("url",), "tcp": ("host", "port")}
_SETTINGS = ("interval", "timeout", "start_period", "failure_threshold", "success_threshold")
FIELDS = ("type", "command", "args", "url", "host", "port", *_SETTINGS)


@dataclass(frozen=True)
class HealthCheck:
    """One check of an instance: what to run (by ``type``) and how often and how strictly.

    ``command`` (exec) is the argv, ``$VAR`` expanded from the instance's environment when it
    runs; ``url`` (http) and ``host``/``port`` (tcp) are expanded the same way (``$PORT``).
    """

    type: str
    command: tuple[str, ...] = ()
    url: str | None = None
    host: str = "127.0.0.1"
    port: str | None = None
    interval: float = 10.0
    timeout: float = 2.0
    start_period: float = 0.0
    failure_threshold: int = 3
    success_threshold: int = 1


def plain_health(check: HealthCheck) -> dict[str, Any]:
    """The plain form ``parse_health`` turns back into an equal check: the target fields of
    its type only (an exec check has no url)."""
    plain: dict[str, Any] = {"type": check.type}
    if check.type == "exec":
        plain["command"] = list(check.command)
    elif check.type == "http":
        plain["url"] = check.url
    else:
        plain["host"], plain["port"] = check.host, check.port
    for key in _SETTINGS:
        plain[key] = getattr(check, key)
    return plain


def parse_health(chk: Checker, value: Any) -> HealthCheck | None:
    """The check in ``value`` (the ``health`` table), or None after naming every problem."""
    table = chk.table("health", value)
    if table is None:
        return None
    chk.unknown_keys(table, FIELDS, prefix="health.")
    kind = table.get("type")
    if kind not in CHECK_TYPES:
        shown = "nothing" if kind is None else _kind(kind)
        chk.fail("health.type", f"must be one of {', '.join(CHECK_TYPES)}, got {shown}")
        kind = None
    else:
        for key in FIELDS[1:5]:
            if key in table and key not in _TARGETS[kind]:
                chk.fail(f"health.{key}", f"is not used by a {kind} check")
    before = len(chk.problems)
    values: dict[str, Any] = {}
    if kind == "exec":
        values["command"] = _command(chk, table)
    elif kind == "http":
        values["url"] = _url(chk, table)
    elif kind == "tcp":
        _tcp(chk, table, values)
    _settings(chk, table, values)
    if kind is None or len(chk.problems) > before:
        return None
    return HealthCheck(type=kind, **values)


def _command(chk: Checker, table: Mapping) -> tuple[str, ...] | None:
    if "command" in table and "args" in table:
        chk.fail("health.args", "give command or args, not both")
        return None
    key = "args" if "args" in table else "command"
    if key not in table:
        chk.fail("health.command", "is required for an exec check")
        return None
    raw = table[key]
    if isinstance(raw, str):
        try:
            words = shlex.split(raw)
        except ValueError as exc:
            chk.fail(f"health.{key}", f"cannot split into words: {exc}")
            return None
    elif isinstance(raw, (list, tuple)):
        words = list(raw)
    else:
        chk.fail(f"health.{key}", f"must be a command line or a list of strings, got {_kind(raw)}")
        return None
    if not words:
        chk.fail(f"health.{key}", "must not be empty")
        return None
    if len(words) > MAX_COMMAND:
        chk.fail(f"health.{key}", f"has {len(words)} words: at most {MAX_COMMAND}")
        return None
    for i, word in enumerate(words):
        if not isinstance(word, str) or "\0" in word or (i == 0 and not word.strip()):
            chk.fail(f"health.{key}[{i}]", f"must be a string without NUL bytes, got {_kind(word)}")
            return None
    return tuple(words)


def _url(chk: Checker, table: Mapping) -> str | None:
    if "url" not in table:
        chk.fail("health.url", "is required for an http check")
        return None
    url = chk.string("health.url", table["url"])
    if url is None:
        return None
    if len(url) > MAX_COMMAND:
        chk.fail("health.url", f"is {len(url)} characters long: at most {MAX_COMMAND}")
        return None
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        chk.fail("health.url", f"is not a URL: {exc}")
        return None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        chk.fail("health.url", f"must be an http:// or https:// URL with a host, got {url!r}")
        return None
    return url


def _tcp(chk: Checker, table: Mapping, values: dict[str, Any]) -> None:
    if "host" in table:
        host = chk.string("health.host", table["host"])
        if host is not None and len(host) > 255:
            chk.fail("health.host", f"is {len(host)} characters long: at most 255")
        else:
            values["host"] = host
    if "port" not in table:
        chk.fail("health.port", "is required for a tcp check")
        return
    raw = table["port"]
    if isinstance(raw, int) and not isinstance(raw, bool):
        port = chk.integer("health.port", raw, minimum=1, maximum=65_535)
        values["port"] = None if port is None else str(port)
    elif isinstance(raw, str) and "$" in raw and len(raw) <= 64:
        values["port"] = raw
    elif isinstance(raw, str) and raw.isdecimal() and len(raw) <= 5 and 1 <= int(raw) <= 65_535:
        values["port"] = raw
    else:
        chk.fail("health.port", f'must be a port 1..65535 or a variable such as "$PORT", got {_kind(raw)}')


def _settings(chk: Checker, table: Mapping, values: dict[str, Any]) -> None:
    if "interval" in table:
        values["interval"] = chk.number(
            "health.interval", table["interval"], minimum=MIN_INTERVAL, maximum=MAX_INTERVAL
        )
    if "timeout" in table:
        values["timeout"] = chk.number("health.timeout", table["timeout"], minimum=MIN_TIMEOUT, maximum=MAX_INTERVAL)
    if "start_period" in table:
        values["start_period"] = chk.number("health.start_period", table["start_period"], maximum=MAX_START_PERIOD)
    for key in ("failure_threshold", "success_threshold"):
        if key in table:
            values[key] = chk.integer(f"health.{key}", table[key], minimum=1, maximum=MAX_THRESHOLD)
    interval = values.get("interval", HealthCheck.interval)
    timeout = values.get("timeout", HealthCheck.timeout)
    if interval is not None and timeout is not None and timeout > interval:
        chk.fail("health.timeout", f"must be <= interval ({interval:g}), got {timeout:g}")
