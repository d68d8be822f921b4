"""bench/RESULTS.md, shared by every bench: each one owns a marked section and rewrites only it.

A section is the text between ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->``. Rewriting
one leaves the others byte for byte as they were, so benches run at different times (or by
different people) can keep their latest numbers side by side in one reviewable file.
"""

from __future__ import annotations

import os
import platform
import re
import tempfile
from pathlib import Path
from typing import Iterable, Sequence

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
HEADER = (
    "# Benchmark results\n\n"
    "Each section below is written by one bench in `bench/` (`bench/results.py`); rerun that\n"
    "bench to refresh it. Numbers are from one run on one machine: compare the ratios, which\n"
    "were all measured in the same run, not absolute numbers across sections.\n"
)
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


def _markers(name: str) -> tuple[str, str]:
    if not NAME_RE.match(name):
        raise ValueError(f"section name {name!r}: use lowercase letters, digits, '-' and '_'")
    return f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"


def replace_section(text: str, name: str, markdown: str) -> str:
    """``text`` with section ``name`` set to ``markdown`` (appended if the section is new)."""
    start, end = _markers(name)
    if start in markdown or end in markdown:
        raise ValueError(f"the markdown for section {name!r} contains its own markers")
    block = f"{start}\n{markdown.strip()}\n{end}"
    head, found, rest = text.partition(start)
    if found:
        _, closed, tail = rest.partition(end)
        if not closed:
            raise ValueError(f"{RESULTS.name}: {start} has no closing {end}")
        return head + block + tail
    if not text.strip():
        text = HEADER
    return text.rstrip("\n") + "\n\n" + block + "\n"


def write_section(name: str, markdown: str, path: Path | None = None) -> Path:
    """Replace (or add) section ``name`` of bench/RESULTS.md, atomically; returns the path."""
    target = path or RESULTS
    try:
        text = target.read_text()
    except FileNotFoundError:
        text = ""
    updated = replace_section(text, name, markdown)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "w") as out:
            out.write(updated)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        os.unlink(tmp)
        raise
    return target


def table(headers: Sequence[str], rows: Iterable[Sequence[object]], align: str = "") -> str:
    """A GitHub markdown table, padded to read as plain text too.

    ``align`` holds one ``l`` or ``r`` per column; by default the first column is left-aligned
    and the others (numbers) right-aligned.
    """
    cells = [[str(c) for c in headers]] + [[str(c) for c in row] for row in rows]
    align = align or "l" + "r" * (len(headers) - 1)
    if len(align) != len(headers) or set(align) - {"l", "r"}:
        raise ValueError(f"align {align!r}: one 'l' or 'r' per column ({len(headers)})")
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: list[str]) -> str:
        parts = [c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(row, widths, align)]
        return "| " + " | ".join(parts) + " |"

    rule = ["-" * w if a == "l" else "-" * (w - 1) + ":" for w, a in zip(widths, align)]
    return "\n".join([line(cells[0]), "| " + " | ".join(rule) + " |", *map(line, cells[1:])])


def machine() -> dict[str, str]:
    """What the numbers depend on: cores, cpu model, kernel, python."""
    model = ""
    try:
        for row in Path("/proc/cpuinfo").read_text().splitlines():
            if row.startswith("model name"):
                model = row.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()
    return {
        "cpus": str(os.cpu_count()),
        "cpu": model or platform.processor() or "unknown",
        "kernel": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "load": " ".join(f"{x:.2f}" for x in load),
    }
