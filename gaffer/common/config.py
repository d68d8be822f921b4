"""Daemon configuration files (TOML): read, and refuse unknown or mistyped keys by name.

Command-line options win over the file; the file wins over defaults.
"""

from __future__ import annotations

import difflib
import logging
import math
from pathlib import Path
from typing import Any, Iterable

from gaffer.common.errors import ConfigError
from gaffer.common.loaders import parse_toml


def read_config(path: str | Path, allowed: Iterable[str]) -> dict[str, Any]:
    """The top-level table of a TOML file whose keys must all be in ``allowed``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    data = parse_toml(text, str(path))
    allowed = list(allowed)
    problems = []
    for key in data:
        if key not in allowed:
            hint = difflib.get_close_matches(key, allowed, n=1)
            suffix = f" (did you mean {hint[0]!r}?)" if hint else f" (known: {', '.join(allowed)})"
            problems.append(f"{path}: {key}: unknown setting{suffix}")
    if problems:
        raise ConfigError("\n".join(problems))
    return data


def expect(
    data: dict[str, Any],
    key: str,
    kind: type | tuple[type, ...],
    where: str,
    *,
    low: float | None = None,
    high: float | None = None,
) -> Any:
    """``data[key]`` if present and of ``kind`` (bool is never an int here), else ConfigError.

    A number is never NaN or infinite, and lies in ``low..high`` when they are given.
    """
    if key not in data:
        return None
    value = data[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds:
        ok = False
    else:
        ok = isinstance(value, kinds)
    if not ok:
        names = " or ".join(k.__name__ for k in kinds)
        raise ConfigError(f"{where}: {key}: must be {names}, got {type(value).__name__}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        check_number(value, f"{where}: {key}", low, high)
    return value


def check_number(value: int | float, what: str, low: float | None, high: float | None) -> None:
    """ConfigError naming ``what`` unless ``value`` is finite and within ``low..high``."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{what}: must be a finite number, got {value}")
    if low is not None and value < low:
        raise ConfigError(f"{what}: must be >= {low:g}, got {_short(value)}")
    if high is not None and value > high:
        raise ConfigError(f"{what}: must be <= {high:g}, got {_short(value)}")


def _short(value: int | float) -> str:
    text = f"{value:g}" if isinstance(value, float) else str(value) if abs(value) < 10**20 else ""
    return text or "a number too large to show"


LOG_LEVELS = ("debug", "info", "warning", "error")


DEFAULT_LOG_LEVEL = "info"


def pick_log_level(option: str | None, data: dict[str, Any], where: str) -> str:
    """``--log-level`` if given, else the file's ``log_level``, else info (ConfigError for a
    level that is none of LOG_LEVELS)."""
    level = option or expect(data, "log_level", str, where) or DEFAULT_LOG_LEVEL
    if level not in LOG_LEVELS:
        raise ConfigError(f"{where}: log_level: must be one of {', '.join(LOG_LEVELS)}, got {level!r}")
    return level


def setup_daemon_logging(level: str) -> None:
    """Timestamped lines on stderr (journald and log collectors add the rest)."""
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def set_log_level(level: str) -> None:
    """A reload's new level, for every logger of the daemon."""
    logging.getLogger().setLevel(level.upper())
