"""Click parameter types for numbers that must be finite and bounded.

click's ``FloatRange`` lets ``nan`` through (every comparison with NaN is false, so no bound
ever refuses it) and ``inf`` too when a side is open; ``IntRange`` prints a value of any length
back. These types refuse NaN and infinities, check both bounds, and keep the message one short
line naming the option. Every float and int option of gaffer's commands uses one of them:
``gafferctl`` and ``gaffer`` (cli/) as well as ``gaffer-controller``, which is why they live in
common/ (the controller may not import cli/).
"""

from __future__ import annotations

import math
from typing import Any

import click

from gaffer.common.limits import (
    MAX_BACKUPS,
    MAX_COUNT,
    MAX_DURATION,
    MAX_EVENT_BUFFER,
    MAX_HEARTBEAT,
    MAX_LINES,
    MAX_METRICS_SERIES,
    MAX_MISSES,
    MAX_TOTAL,
    MAX_WAIT,
    MIN_HEARTBEAT,
    MIN_STATS_INTERVAL,
    MAX_STATS_INTERVAL,
)

MAX_DIGITS = 40


class FiniteFloat(click.ParamType):
    """A finite float in ``low..high`` (``low`` excluded when ``open_low``)."""

    name = "seconds"

    def __init__(self, low: float, high: float, *, open_low: bool = False, name: str = "seconds") -> None:
        self.low = low
        self.high = high
        self.open_low = open_low
        self.name = name

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, bool):
            self.fail(f"expected a number, got {value!r}", param, ctx)
        if isinstance(value, (int, float)):
            number = _as_float(value)
        else:
            text = str(value).strip()
            if len(text) > MAX_DIGITS:
                self.fail(f"expected a number, got {len(text)} characters", param, ctx)
            try:
                number = float(text)
            except ValueError:
                self.fail(f"expected a number, got {value!r}", param, ctx)
        if number is None or not math.isfinite(number):
            self.fail(f"must be a finite number, got {value!r}", param, ctx)
        if number < self.low or (self.open_low and number == self.low):
            side = ">" if self.open_low else ">="
            self.fail(f"must be {side} {self.low:g}, got {number:g}", param, ctx)
        if number > self.high:
            self.fail(f"must be at most {self.high:g}, got {number:g}", param, ctx)
        return number

    def __repr__(self) -> str:
        return f"FiniteFloat({self.low:g}, {self.high:g})"


class BoundedInt(click.ParamType):
    """An integer in ``low..high``, written in plain decimal digits."""

    name = "integer"

    def __init__(self, low: int, high: int, *, name: str = "integer") -> None:
        self.low = low
        self.high = high
        self.name = name

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        else:
            text = str(value).strip()
            digits = text[1:] if text[:1] in "+-" else text
            if not digits or not digits.isascii() or not digits.isdecimal():
                shown = repr(text) if len(text) <= MAX_DIGITS else f"{len(text)} characters"
                self.fail(f"expected an integer, got {shown}", param, ctx)
            if len(digits) > MAX_DIGITS:
                self.fail(f"must be at most {self.high}, got a number of {len(digits)} digits", param, ctx)
            number = int(text)
        if number < self.low:
            self.fail(f"must be >= {self.low}, got {number}", param, ctx)
        if number > self.high:
            self.fail(f"must be at most {self.high}, got {number}", param, ctx)
        return number

    def __repr__(self) -> str:
        return f"BoundedInt({self.low}, {self.high})"


MAX_PREFIX = 256
"""Characters of an event topic prefix (a topic is at most 256)."""


def topic_prefixes(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> tuple[str, ...]:
    """Click callback: event topic prefixes must be text a topic can hold (an argument that
    was not valid UTF-8 arrives with surrogates, which cannot be subscribed to)."""
    for value in values:
        shown = repr(value) if len(value) <= 40 else f"of {len(value)} characters"
        if len(value) > MAX_PREFIX:
            raise click.BadParameter(f"a topic prefix is at most {MAX_PREFIX} characters, got one {shown}")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise click.BadParameter(f"{shown} is not valid UTF-8 text") from None
    return values


def _as_float(value: int | float) -> float | None:
    try:
        return float(value)
    except OverflowError:
        return None


TIMEOUT = FiniteFloat(0.0, MAX_WAIT, open_low=True)
"""Seconds to wait for an answer: more than 0, at most a day."""
SECONDS = FiniteFloat(0.0, MAX_WAIT)
"""Seconds to wait for something (0 allowed), at most a day."""
DURATION = FiniteFloat(0.0, MAX_DURATION)
"""Seconds of a period (backups), at most 30 days."""
KEEP = BoundedInt(1, MAX_BACKUPS)
HEARTBEAT = FiniteFloat(MIN_HEARTBEAT, MAX_HEARTBEAT)
MISSES = BoundedInt(1, MAX_MISSES)
STATS_INTERVAL = FiniteFloat(MIN_STATS_INTERVAL, MAX_STATS_INTERVAL)
"""Seconds between an agent's stats pushes (``gaffer-agent --stats-interval``)."""
LINES = BoundedInt(0, MAX_LINES)
POSITION = BoundedInt(0, 2**63 - 1)
"""An event position (``gafferctl events --since``)."""
LEASE = FiniteFloat(1.0, 3_600.0)
"""A one-off run's lease (``gafferctl run --lease``): 1 s to an hour."""
PER_TEMPLATE = BoundedInt(1, MAX_COUNT)
TOTAL = BoundedInt(1, MAX_TOTAL)
EVENT_BUFFER = BoundedInt(1, MAX_EVENT_BUFFER)
"""Events a controller holds for replay (``--event-buffer``)."""
METRICS_SERIES = BoundedInt(0, MAX_METRICS_SERIES)
"""Templates or instances given series of their own on /metrics (``--metrics-max-*``)."""
