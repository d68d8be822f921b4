"""Every Procfile and .env line form, against what honcho 2.0.0 does with it (issue 9).

The tables are the README's "Procfile" rules; the column ``honcho`` records what honcho 2.0.0
does with the same line (read off its ``environ.PROCFILE_LINE`` and ``environ.parse`` and run
side by side when the tables were written). The hypothesis property checks the .env reader
against ``honcho_value``, a literal transcription of ``environ.parse`` for one line.
"""

from __future__ import annotations

import re
import shlex

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gaffer.common.errors import TemplateError
from gaffer.common.loaders import templates_from_procfile
from gaffer.common.procfile import dotenv_line, parse_dotenv, parse_procfile
from budget import examples

# line, gaffer's process (name, command) or None, the warning's reason or "", honcho's process
PROCFILE_LINES = [
    ("web: python app.py", ("web", "python app.py"), "", ("web", "python app.py")),
    ("web:python app.py", ("web", "python app.py"), "", ("web", "python app.py")),
    ("web:\t  python app.py  ", ("web", "python app.py"), "", ("web", "python app.py  ")),
    ("web_2-x: run", ("web_2-x", "run"), "", ("web_2-x", "run")),
    ("9: run", ("9", "run"), "", ("9", "run")),
    ("web: a: b", ("web", "a: b"), "", ("web", "a: b")),
    ("web: run # the shell's comment", ("web", "run # the shell's comment"), "", ("web", "run # the shell's comment")),
    ("web: echo $PORT", ("web", "echo $PORT"), "", ("web", "echo $PORT")),
    ("  web: run", None, "indented (a process line starts with its name)", None),
    ("\tweb: run", None, "indented (a process line starts with its name)", None),
    ("web : run", None, "a space before ':'", None),
    ("web\t: run", None, "a space before ':'", None),
    ("web.admin: run", None, "the name 'web.admin' has a character other than letters, digits, '_' and '-'", None),
    ("my web: run", None, "the name 'my web' has a character other than letters, digits, '_' and '-'", None),
    ("wéb: run", None, "the name 'wéb' has a character other than letters, digits, '_' and '-'", None),
    ("web", None, "no ':' (expected 'name: command')", None),
    (": run", None, "no name before ':'", None),
    ("web:", None, "the command is empty", None),
    ("web:   ", None, "the command is blank (honcho would run it, exit at once and stop the others)", ("web", " ")),
]

# lines neither gaffer nor honcho says anything about
SILENT_LINES = ["", "   ", "# a comment", "  # an indented comment", "#web: run"]

# line, what gaffer refuses it with (the whole file), what honcho does
REFUSED_PROCFILE = [
    ("_web: run", "line 1: the name '_web' is not valid", "runs it"),
    ("-web: run", "line 1: the name '-web' is not valid", "runs it"),
    ("a" * 65 + ": run", f"line 1: the name {'a' * 65!r} is not valid", "runs it"),
    ("web: a\nweb: b", "web.name: defined more than once", "AssertionError traceback"),
]

# line, gaffer's value ("" key absent means skipped with a warning), honcho's value (None: skipped)
DOTENV_VALUES = [
    ("A=1", "1", "1"),
    ("  A = 1  ", "1", "1"),
    ("A=a=b", "a=b", "a=b"),
    ("A=value # comment", "value", "value"),
    ("A=value#comment", "value", "value"),
    ('A="value # not a comment"', "value # not a comment", "value # not a comment"),
    ("A='value # not a comment'", "value # not a comment", "value # not a comment"),
    ("A='single $quoted'", "single $quoted", "single $quoted"),
    ('A="double quoted"', "double quoted", "double quoted"),
    ("A='new\\nline'", "new\nline", "new\nline"),
    ('A="tab\\there\\nnewline"', "tab\there\nnewline", "tab\there\nnewline"),
    ('A="quote \\" and backslash \\\\"', 'quote " and backslash \\', 'quote " and backslash \\'),
    ('A="unknown \\q stays"', "unknown \\q stays", "unknown \\q stays"),
    ("A=escaped\\ space", "escaped space", "escaped space"),
    ("A=bare\\nescape", "barenescape", "barenescape"),
    ("A=$OTHER", "$OTHER", "$OTHER"),
    ("A=${OTHER}x", "${OTHER}x", "${OTHER}x"),
    ('A=""', "", ""),
    ("A=it\"'\"s", "it's", "it's"),
    ('A="two"words', "twowords", "twowords"),
    ("_under_score9=x", "x", "x"),
    ("export=1", "1", "1"),
    ("export A=1", "1", None),
    ("export   A='q'", "q", None),
    ("A=", "", None),
    ("A= # comment", "", None),
]

DOTENV_SKIPPED = ["JUSTAKEY", "1A=x", "A-B=x", "=x", "export", "export A", "A x=1", "A:=1", "A.B=1"]
"""Lines both skip (honcho silently, gaffer with a warning)."""

# line, why gaffer refuses it, what honcho does
DOTENV_REFUSED = [
    ("A=two words", "unquoted space inside the value: honcho would read 'twowords'; quote the value", "'twowords'"),
    ("A=a b # c", "unquoted space inside the value: honcho would read 'ab'; quote the value", "'ab'"),
    ("A='unclosed", "no closing quotation (honcho stops with this error too)", "ValueError traceback"),
    ('A="', "no closing quotation (honcho stops with this error too)", "ValueError traceback"),
    ("A=trailing\\", "no escaped character (honcho stops with this error too)", "ValueError traceback"),
    ('"A B"=x', "'A B' is not a valid variable name (letters, digits and '_')", "sets 'A B'"),
    ("Aé=x", "'Aé' is not a valid variable name (letters, digits and '_')", "sets 'Aé'"),
]


def honcho_value(line: str) -> str | None:
    """honcho 2.0.0's ``environ.parse`` for one line: the value, or None when it skips the line
    (``ValueError`` propagates, as it does from honcho)."""
    tokens = list(shlex.shlex(line, posix=True))
    if len(tokens) < 3:
        return None
    name, op = tokens[:2]
    if op != "=" or not re.match(r"[A-Za-z_][A-Za-z_0-9]*", name):
        return None
    return "".join(tokens[2:]).replace(r"\n", "\n").replace(r"\t", "\t")


class TestProcfileLines:
    @pytest.mark.parametrize(("line", "process", "reason", "honcho"), PROCFILE_LINES)
    def test_each_line_form(self, line: str, process: tuple[str, str] | None, reason: str, honcho) -> None:
        """A line becomes the process honcho makes of it, or is skipped with a warning naming file, line and why."""
        procfile = parse_procfile("web0: first\n" + line + "\n", "Procfile")
        assert [(t.name, t.command) for t in procfile.types[1:]] == ([process] if process else [])
        assert [str(s) for s in procfile.skipped] == ([f"Procfile:2: skipped {line!r}: {reason}"] if reason else [])
        if honcho is not None and process is not None:
            assert process == (honcho[0], honcho[1].strip())

    @pytest.mark.parametrize("line", SILENT_LINES)
    def test_blank_and_comment_lines_say_nothing(self, line: str) -> None:
        """Blank lines and # comments (indented too) are neither processes nor warnings."""
        assert parse_procfile(line + "\nweb: run\n", "Procfile") == parse_procfile("\nweb: run\n", "Procfile")
        assert parse_procfile(line, "Procfile").skipped == []

    @pytest.mark.parametrize(("text", "problem", "honcho"), REFUSED_PROCFILE)
    def test_names_gaffer_cannot_take_refuse_the_file(self, text: str, problem: str, honcho: str) -> None:
        """A line honcho would run but gaffer cannot name refuses the file (never silently dropped)."""
        with pytest.raises(TemplateError) as info:
            templates_from_procfile(text + "\nok: run\n", source="Procfile")
        assert [str(p) for p in info.value.problems][0].startswith(problem)

    def test_a_blank_command_still_takes_its_port_block(self) -> None:
        """Positions follow honcho's list of types, in which `web:  ` (a blank command) counts."""
        procfile = parse_procfile("web: a\nblank:  \nindented:\n  x: y\nworker: b\n", "Procfile")
        assert [(t.name, t.position) for t in procfile.types] == [("web", 0), ("worker", 2)]


class TestDotenvLines:
    @pytest.mark.parametrize(("line", "value", "honcho"), DOTENV_VALUES)
    def test_each_value_form(self, line: str, value: str, honcho: str | None) -> None:
        """A line gives the value honcho gives, and KEY= or export KEY=... are kept where honcho drops them."""
        verdict = dotenv_line(line)
        assert (verdict.value, verdict.skip, verdict.refuse) == (value, "", "")
        assert honcho_value(line) == honcho
        if honcho is not None:
            assert value == honcho

    @pytest.mark.parametrize("line", DOTENV_SKIPPED)
    def test_lines_honcho_skips_are_warnings(self, line: str) -> None:
        """A line honcho ignores sets nothing and comes back as a warning naming file and line."""
        env = parse_dotenv("A=1\n" + line + "\n", ".env")
        assert env.values == {"A": "1"} and env.problems == []
        assert [str(s) for s in env.skipped] == [
            f".env:2: skipped {line!r}: expected KEY=value, KEY made of letters, digits and '_' not starting with a digit"
        ]
        assert honcho_value(line) is None

    @pytest.mark.parametrize(("line", "reason", "honcho"), DOTENV_REFUSED)
    def test_surprising_lines_are_refused(self, line: str, reason: str, honcho: str) -> None:
        """A line honcho would glue, crash on or set under an unusable name is a problem naming file and line."""
        env = parse_dotenv("A=1\n" + line + "\n", ".env")
        assert [str(p) for p in env.problems] == [f".env:2: {reason}"]

    @settings(max_examples=examples(400), deadline=None)
    @given(st.text(st.sampled_from(list("AB_1= \"'\\#nt-$é\t")), min_size=1, max_size=14))
    def test_every_value_gaffer_reads_is_honchos(self, line: str) -> None:
        """Over arbitrary lines: a value gaffer reads is honcho's; a line honcho skips or stops on is skipped or refused."""
        if not line.strip() or line.strip().startswith("#"):
            return
        verdict = dotenv_line(line)
        try:
            honcho = honcho_value(line)
        except ValueError:
            assert verdict.refuse
            return
        if verdict.skip:
            assert honcho is None
        elif not verdict.refuse and honcho is not None:
            assert verdict.value == honcho
