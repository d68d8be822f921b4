"""The per-process limits of a template: ``rlimits``, ``umask`` and ``nice``.

These are the settings supervisor's and circus' users ask for beyond the command line, with
systemd's meaning (``LimitNOFILE=``, ``UMask=``, ``Nice=``): set in the child before it execs,
so the program runs under them from its first instruction (how: ``gaffer.agent.childlimits``).

- ``rlimits``: a table of ``nofile``, ``nproc``, ``core``, ``memlock``, ``as``. Each value is
  one number or ``"unlimited"`` (soft and hard both, as systemd's ``LimitNOFILE=N``), or a
  ``[soft, hard]`` pair, or a ``{soft, hard}`` table. ``core``, ``memlock`` and ``as`` are bytes.
  Kept as ``(name, soft, hard)`` triples whatever was written, so the plain form is canonical.
- ``umask``: an octal string (``"022"``, ``"0027"``) or an integer 0..0o777 taken as its value
  (TOML's ``0o022``). Its plain form is the octal string.
- ``nice``: -20..19, absolute (not added to gaffer's own).

Whether this host lets the agent grant a value (raising a hard limit, a nice below its own) is
the agent's question at spawn time, not validation's: a controller validates templates that
run elsewhere.
"""

from __future__ import annotations

from typing import Any, Mapping

from gaffer.common.describe import describe as _kind
from gaffer.common.fieldcheck import Checker, digits

UNLIMITED = "unlimited"
MAX_FDS = 2**31 - 1
MAX_BYTES = 2**63 - 2
RLIMIT_MAXIMA = {
    "nofile": MAX_FDS,
    "nproc": MAX_FDS,
    "core": MAX_BYTES,
    "memlock": MAX_BYTES,
    "as": MAX_BYTES,
}
"""The limits a template may set, with the largest finite value of each (a count of
descriptors or processes fits the kernel's int; bytes stay below RLIM_INFINITY)."""
RLIMIT_NAMES = tuple(RLIMIT_MAXIMA)
MAX_UMASK = 0o777
NICE_RANGE = (-20, 19)
FIELDS = ("rlimits", "umask", "nice")

Pair = tuple[Any, Any]
"""(soft, hard): each an int or ``UNLIMITED``."""
Triple = tuple[str, Any, Any]
"""(name, soft, hard)."""


def parse_limits(chk: Checker, data: Mapping, values: dict[str, Any]) -> None:
    """Check ``rlimits``, ``umask`` and ``nice`` of ``data`` into ``values``, every problem
    recorded in ``chk`` (the template's other fields are checked alongside)."""
    if data.get("rlimits") is not None:
        rlimits = parse_rlimits(chk, data["rlimits"])
        if rlimits:
            values["rlimits"] = rlimits
    if data.get("umask") is not None:
        values["umask"] = parse_umask(chk, data["umask"])
    if data.get("nice") is not None:
        low, high = NICE_RANGE
        nice = chk.integer("nice", data["nice"], minimum=low, maximum=high)
        values["nice"] = nice


def parse_rlimits(chk: Checker, value: Any) -> tuple[Triple, ...] | None:
    table = chk.table("rlimits", value)
    if table is None:
        return None
    chk.unknown_keys(table, RLIMIT_NAMES, prefix="rlimits.")
    out = []
    for name in RLIMIT_NAMES:
        if name in table:
            pair = _parse_pair(chk, f"rlimits.{name}", table[name], RLIMIT_MAXIMA[name])
            if pair is not None:
                out.append((name, *pair))
    return tuple(out)


def _parse_pair(chk: Checker, where: str, value: Any, maximum: int) -> Pair | None:
    if isinstance(value, Mapping):
        chk.unknown_keys(value, ("soft", "hard"), prefix=f"{where}.")
        missing = [key for key in ("soft", "hard") if key not in value]
        if missing:
            chk.fail(f"{where}.{missing[0]}", "is required")
            return None
        raw: tuple[Any, Any] = (value["soft"], value["hard"])
        names = (f"{where}.soft", f"{where}.hard")
    elif isinstance(value, (list, tuple)):
        if len(value) != 2:
            chk.fail(where, f"must be [soft, hard]: 2 values, got {len(value)}")
            return None
        raw = (value[0], value[1])
        names = (f"{where}[0]", f"{where}[1]")
    else:
        one = _parse_value(chk, where, value, maximum)
        return None if one is None else (one, one)
    soft = _parse_value(chk, names[0], raw[0], maximum)
    hard = _parse_value(chk, names[1], raw[1], maximum)
    if soft is None or hard is None:
        return None
    if _above(soft, hard):
        chk.fail(where, f"soft limit {soft} is above the hard limit {hard}")
        return None
    return soft, hard


def _parse_value(chk: Checker, where: str, value: Any, maximum: int) -> int | str | None:
    if value == UNLIMITED:
        if where.startswith("rlimits.nofile"):
            chk.fail(where, "cannot be unlimited: Linux caps open files at fs.nr_open; give a number")
            return None
        return UNLIMITED
    if isinstance(value, bool) or not isinstance(value, int):
        chk.fail(where, f'must be a non-negative integer or "{UNLIMITED}", got {_kind(value)}')
        return None
    return chk.integer(where, value, minimum=0, maximum=maximum)


def _above(soft: int | str, hard: int | str) -> bool:
    if hard == UNLIMITED:
        return False
    return soft == UNLIMITED or soft > hard  # type: ignore[operator]


def parse_umask(chk: Checker, value: Any) -> int | None:
    if isinstance(value, str):
        text = value.strip()
        digits_only = text[2:] if text[:2].lower() == "0o" else text
        if not digits_only or len(digits_only) > 4 or any(c not in "01234567" for c in digits_only):
            chk.fail("umask", f'must be an octal string such as "022", got {_kind(value)}')
            return None
        number = int(digits_only, 8)
    elif isinstance(value, int) and not isinstance(value, bool):
        number = value
    else:
        chk.fail("umask", f'must be an octal string such as "022" (or an integer), got {_kind(value)}')
        return None
    if not 0 <= number <= MAX_UMASK:
        shown = f"0o{number:o}" if number >= 0 else digits(number)
        chk.fail("umask", f"must be 0..0o777 (\"000\"..\"777\"), got {shown}")
        return None
    return number


def format_umask(umask: int) -> str:
    """The plain form of a umask: three octal digits (``"022"``)."""
    return f"{umask:03o}"


def plain_limits(
    rlimits: tuple[Triple, ...], umask: int | None, nice: int | None
) -> dict[str, Any]:
    """The plain form of the fields that are set: left out otherwise, so a template without
    them hashes as before they existed; pairs as lists, the umask as its octal string."""
    plain: dict[str, Any] = {}
    if rlimits:
        plain["rlimits"] = {name: [soft, hard] for name, soft, hard in rlimits}
    if umask is not None:
        plain["umask"] = format_umask(umask)
    if nice is not None:
        plain["nice"] = nice
    return plain
