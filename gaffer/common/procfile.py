"""Procfile and ``.env`` lines, read by honcho 2.0.0's rules so a Procfile app behaves the same.

honcho matches each Procfile line against ``^([A-Za-z0-9_-]+):\\s*(.+)$`` and silently drops
every line that does not match; it splits each ``.env`` line with ``shlex.shlex(line,
posix=True)`` and keeps ``NAME = value...`` (the value's tokens joined with nothing between
them, then ``\\n`` and ``\\t`` turned into newline and tab). gaffer reads the same lines the
same way, with three differences, each one said out loud:

- a line honcho drops is dropped here too, but with a warning (a ``Skipped``) naming the file,
  the line number and the reason, so a typo is not a silently missing process;
- where honcho would produce a value nobody meant (``KEY=two words`` becomes ``twowords``) or
  stops with a traceback (an unclosed quote), the line is a ``Problem`` and the file is refused;
- where gaffer was already better it stays so: ``export KEY=value`` sets KEY (honcho drops the
  line) and ``KEY=`` sets KEY to the empty string (honcho drops it too).

Both parsers are pure: text in, values out. ``loaders`` reads the files and builds templates.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

from gaffer.common.errors import Problem

HONCHO_LINE = re.compile(r"^([A-Za-z0-9_-]+):\s*(.+)$")
"""honcho 2.0.0's ``environ.PROCFILE_LINE``, matched against the raw (unstripped) line."""
HONCHO_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
HONCHO_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z_0-9]*")
"""honcho's test of a ``.env`` key: ``re.match``, so only the first character really counts."""
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")
EXPORT = re.compile(r"^\s*export\s+(?=[A-Za-z_])")
SHOWN = 60
"""Characters of a skipped line shown in its warning."""


@dataclass(frozen=True)
class Skipped:
    """A line left out (honcho leaves it out too, or would run a blank command): a warning."""

    source: str
    line: int
    text: str
    reason: str

    def __str__(self) -> str:
        return f"{self.source}:{self.line}: skipped {shown(self.text)}: {self.reason}"


@dataclass(frozen=True)
class ProcessType:
    """One ``name: command`` line. ``position`` is honcho's index of the type (0, 1, ...),
    which picks its block of ports; a blank-command line gaffer skips still takes one."""

    name: str
    command: str
    line: int
    position: int


@dataclass(frozen=True)
class Procfile:
    types: list[ProcessType] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


@dataclass(frozen=True)
class DotEnv:
    """The values of a ``.env``, the lines skipped with a warning, the lines refused."""

    values: dict[str, str] = field(default_factory=dict)
    skipped: list[Skipped] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def shown(text: str) -> str:
    return repr(text) if len(text) <= SHOWN else repr(text[:SHOWN]) + f"... ({len(text)} characters)"


def parse_procfile(text: str, source: str) -> Procfile:
    """The process types of a Procfile, in file order, and the lines skipped (with why).

    Blank lines and ``#`` comments are skipped without a word, as honcho does.
    """
    result = Procfile()
    position = 0
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        match = HONCHO_LINE.match(line)
        if match is None:
            result.skipped.append(Skipped(source, number, line, why_not_a_process(line)))
            continue
        name, command = match.group(1), match.group(2).strip()
        if command:
            result.types.append(ProcessType(name, command, number, position))
        else:
            reason = "the command is blank (honcho would run it, exit at once and stop the others)"
            result.skipped.append(Skipped(source, number, line, reason))
        position += 1
    return result


def why_not_a_process(line: str) -> str:
    """Why honcho's pattern does not match ``line`` (a non-blank, non-comment line)."""
    if line[0].isspace():
        return "indented (a process line starts with its name)"
    if ":" not in line:
        return "no ':' (expected 'name: command')"
    name, _, _ = line.partition(":")
    if not name:
        return "no name before ':'"
    if name != name.rstrip() and HONCHO_NAME.match(name.rstrip()):
        return "a space before ':'"
    if not HONCHO_NAME.match(name):
        return f"the name {name!r} has a character other than letters, digits, '_' and '-'"
    return "the command is empty"


def parse_dotenv(text: str, source: str) -> DotEnv:
    """``KEY=value`` lines by honcho's rules (module docstring); a later KEY wins."""
    result = DotEnv()
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        verdict = dotenv_line(line)
        if verdict.refuse:
            result.problems.append(Problem(f"{source}:{number}", "", verdict.refuse))
        elif verdict.skip:
            result.skipped.append(Skipped(source, number, line, verdict.skip))
        else:
            result.values[verdict.key] = verdict.value
    return result


@dataclass(frozen=True)
class EnvLine:
    """What one ``.env`` line means: a ``key`` and ``value``, or why it is skipped (a warning),
    or why it is refused (the file is)."""

    key: str = ""
    value: str = ""
    skip: str = ""
    refuse: str = ""


def dotenv_line(line: str) -> EnvLine:
    """One non-blank, non-comment ``.env`` line, read as honcho reads it."""
    export = EXPORT.match(line)
    body = line[export.end():] if export else line
    try:
        tokens = list(shlex.shlex(body, posix=True))
    except ValueError as exc:  # an unclosed quote, a trailing backslash: honcho stops here
        return EnvLine(refuse=f"{str(exc).lower()} (honcho stops with this error too)")
    if len(tokens) < 2 or tokens[1] != "=" or not HONCHO_ENV_NAME.match(tokens[0]):
        return EnvLine(skip="expected KEY=value, KEY made of letters, digits and '_' not starting with a digit")
    key, value = tokens[0], "".join(tokens[2:])
    if not ENV_NAME.match(key):
        return EnvLine(refuse=f"{key!r} is not a valid variable name (letters, digits and '_')")
    if value_spans_words(body, len(value)):
        return EnvLine(refuse=f"unquoted space inside the value: honcho would read {value!r}; quote the value")
    return EnvLine(key, value.replace("\\n", "\n").replace("\\t", "\t"))


def value_spans_words(body: str, value_length: int) -> bool:
    """Whether the value (the last ``value_length`` characters honcho's tokens hold) was written
    as several words with unquoted space between them, which honcho glues together.

    The same lexer with ``whitespace_split`` yields the very same characters, cut only at
    whitespace; the value spans words when one of those cuts falls inside it.
    """
    lexer = shlex.shlex(body, posix=True)
    lexer.whitespace_split = True
    words = list(lexer)
    total = sum(len(word) for word in words)
    start = total - value_length
    cut = 0
    for word in words[:-1]:
        cut += len(word)
        if start < cut < total:
            return True
    return False
