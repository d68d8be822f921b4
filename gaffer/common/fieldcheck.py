"""Checking plain data field by field, collecting every problem instead of stopping at the first.

A ``Checker`` is made per record (one template); each method converts one value or records
a ``Problem`` naming the record and the field, and returns None. The caller goes on with the
other fields, so a user sees every mistake of a file at once. Numbers are bounded (NaN and
infinities refused), strings may not be empty or carry NUL bytes, and an unknown key comes
with the nearest known one.
"""

from __future__ import annotations

import difflib
import math
from typing import Any, Iterable, Mapping

from gaffer.common.describe import describe as _kind
from gaffer.common.errors import Problem
from gaffer.common.limits import MAX_DURATION, MAX_INT


class Checker:
    """Collects problems for one template while converting its fields."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.problems: list[Problem] = []

    def fail(self, field_name: str, message: str) -> None:
        self.problems.append(Problem(self.where, field_name, message))

    def unknown_keys(self, data: Mapping, allowed: Iterable[str], prefix: str = "") -> None:
        allowed = list(allowed)
        for key in data:
            if key in allowed:
                continue
            hint = difflib.get_close_matches(str(key), allowed, n=1)
            suffix = f" (did you mean {hint[0]!r}?)" if hint else ""
            self.fail(prefix + str(key), f"unknown field{suffix}")

    def string(self, name: str, value: Any, *, allow_empty: bool = False) -> str | None:
        if not isinstance(value, str):
            self.fail(name, f"must be a string, got {_kind(value)}")
            return None
        if not allow_empty and not value.strip():
            self.fail(name, "must not be empty")
            return None
        if "\0" in value:
            self.fail(name, "must not contain a NUL byte")
            return None
        return value

    def boolean(self, name: str, value: Any) -> bool | None:
        if not isinstance(value, bool):
            self.fail(name, f"must be true or false, got {_kind(value)}")
            return None
        return value

    def integer(
        self, name: str, value: Any, *, minimum: int | None = None, maximum: int = MAX_INT
    ) -> int | None:
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(name, f"must be an integer, got {_kind(value)}")
            return None
        if minimum is not None and value < minimum:
            self.fail(name, f"must be >= {minimum}, got {digits(value)}")
            return None
        if value > maximum:
            self.fail(name, f"is too large: at most {maximum:,}, got {digits(value)}")
            return None
        return value

    def number(
        self, name: str, value: Any, *, minimum: float = 0.0, maximum: float = MAX_DURATION
    ) -> float | None:
        """A finite number in ``minimum..maximum`` (NaN and infinities are refused)."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(name, f"must be a number, got {_kind(value)}")
            return None
        try:
            value = float(value)
        except OverflowError:
            self.fail(name, f"is too large: at most {maximum:g}")
            return None
        if not math.isfinite(value):
            self.fail(name, f"must be finite, got {value}")
            return None
        if value < minimum:
            self.fail(name, f"must be >= {minimum:g}, got {value:g}")
            return None
        if value > maximum:
            self.fail(name, f"is too large: at most {maximum:g}, got {value:g}")
            return None
        return float(value)

    def table(self, name: str, value: Any) -> Mapping | None:
        if not isinstance(value, Mapping):
            self.fail(name, f"must be a table/object, got {_kind(value)}")
            return None
        return value


def digits(value: int) -> str:
    """An integer for a message: itself, or how long it is when it would flood the line."""
    text = str(value) if abs(value) < 10**20 else ""
    return text or f"a number of {len(str(abs(value)))} digits"
