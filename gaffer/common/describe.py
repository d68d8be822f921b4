"""How error messages name a bad value: ``number 5``, ``string 'x'``, ``a table``, ``null``."""

from __future__ import annotations

from typing import Any, Mapping


def describe(value: Any) -> str:
    """A short, human name for ``value`` to put after "got" in a validation message."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, (int, float)):
        return f"number {value!r}"
    if isinstance(value, str):
        return f"string {value!r}" if len(value) < 40 else "a string"
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, (list, tuple)):
        return "a list"
    return type(value).__name__
