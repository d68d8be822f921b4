"""Template files: TOML, JSON, Procfile and the .env beside a Procfile, read from real files."""

from __future__ import annotations

from pathlib import Path

import pytest

from gaffer.common.errors import ConfigError, Problem, TemplateError
from gaffer.common.loaders import (
    find_default_file,
    load,
    load_templates,
    read_dotenv,
    templates_from_json,
    templates_from_procfile,
    templates_from_toml,
)
from gaffer.common.procfile import DotEnv
from gaffer.common.template import Flapping, Template


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


class TestToml:
    def test_each_table_is_a_template_with_nested_tables(self, tmp_path: Path) -> None:
        """[web] is a template and [web.flapping] its flapping policy."""
        path = write(
            tmp_path / "gaffer.toml",
            """
            [web]
            cmd = "python"
            args = ["app.py", "--port", "8000"]
            numprocesses = 3
            env = { MODE = "prod" }

            [web.flapping]
            attempts = 2
            window = 5

            [worker]
            cmd = "python worker.py"
            shell = true
            """,
        )
        web, worker = load_templates(path)
        assert web == Template(
            name="web",
            cmd="python",
            args=("app.py", "--port", "8000"),
            numprocesses=3,
            env={"MODE": "prod"},
            flapping=Flapping(attempts=2, window=5.0),
        )
        assert worker == Template(name="worker", cmd="python worker.py", shell=True)

    def test_invalid_toml_reports_the_parser_position(self, tmp_path: Path) -> None:
        """A syntax error is a ConfigError naming the file, line and column."""
        path = write(tmp_path / "gaffer.toml", '[web]\ncmd = \n')
        with pytest.raises(ConfigError) as info:
            load_templates(path)
        assert info.value.message == f"{path}: invalid TOML: Invalid value (at line 2, column 7)"

    def test_bare_top_level_value_is_refused(self) -> None:
        """Top-level keys must be tables; a stray value is named."""
        with pytest.raises(TemplateError) as info:
            templates_from_toml('port = 8000\n[web]\ncmd = "x"\n', source="t.toml")
        assert info.value.problems == [Problem("port", "", "must be a table [port], got a bare value")]

    def test_problems_of_every_table_are_reported_together(self, tmp_path: Path) -> None:
        """One error lists the problems of all templates in the file, with the file name."""
        path = write(
            tmp_path / "gaffer.toml",
            '[web]\ncmd = "x"\nnumprocesses = -1\n[web.flapping]\nattempt = 3\n'
            '[worker]\nrestart = "sometimes"\n',
        )
        with pytest.raises(TemplateError) as info:
            load_templates(path)
        assert info.value.source == str(path)
        assert [str(p) for p in info.value.problems] == [
            "web.numprocesses: must be >= 0, got -1",
            "web.flapping.attempt: unknown field (did you mean 'attempts'?)",
            "worker.cmd: is required",
            "worker.restart: must be one of always, on-failure, never, got string 'sometimes'",
        ]


class TestJson:
    def test_single_object_with_name(self) -> None:
        """One object carrying its own name is one template."""
        (t,) = templates_from_json('{"name": "web", "cmd": "python app.py"}')
        assert t == Template(name="web", cmd="python app.py")

    def test_list_of_objects(self) -> None:
        """A list holds templates that name themselves, in order."""
        templates = templates_from_json('[{"name": "a", "cmd": "x"}, {"name": "b", "cmd": "y"}]')
        assert [(t.name, t.cmd) for t in templates] == [("a", "x"), ("b", "y")]

    def test_object_keyed_by_name(self) -> None:
        """An object of objects is keyed by template name."""
        templates = templates_from_json('{"web": {"cmd": "x", "numprocesses": 2}, "worker": {"cmd": "y"}}')
        assert [(t.name, t.numprocesses) for t in templates] == [("web", 2), ("worker", 1)]

    @pytest.mark.parametrize("name", ["cmd", "name"])
    def test_templates_may_be_called_cmd_or_name(self, name: str) -> None:
        """A keyed object whose key happens to be a field name is still keyed by name."""
        (t,) = templates_from_json(f'{{"{name}": {{"cmd": "x"}}}}')
        assert (t.name, t.cmd) == (name, "x")

    def test_single_object_with_bad_cmd_is_still_one_template(self) -> None:
        """A lone template with a wrong cmd type reports the cmd, not a strange template."""
        with pytest.raises(TemplateError) as info:
            templates_from_json('{"name": "web", "cmd": 5}')
        assert [str(p) for p in info.value.problems] == ["web.cmd: must be a string, got number 5"]

    def test_invalid_json_reports_the_parser_position(self, tmp_path: Path) -> None:
        """A syntax error is a ConfigError with line and column."""
        path = write(tmp_path / "t.json", '{"web": {"cmd": "x",}}')
        with pytest.raises(ConfigError) as info:
            load_templates(path)
        assert info.value.message == (
            f"{path}: invalid JSON: Expecting property name enclosed in double quotes: "
            "line 1 column 21 (char 20)"
        )

    @pytest.mark.parametrize("text", ["5", '"web"', "null"])
    def test_top_level_scalar_is_refused(self, text: str) -> None:
        """Only objects and lists can hold templates."""
        with pytest.raises(TemplateError) as info:
            templates_from_json(text, source="t.json")
        assert info.value.message == (
            "t.json: expected a template object, a list of them, or an object keyed by name"
        )

    def test_list_reports_all_problems(self) -> None:
        """Problems from every item of a list come back in one error."""
        with pytest.raises(TemplateError) as info:
            templates_from_json('[{"name": "a"}, {"name": "b", "cmd": "x", "shell": "yes"}, 3]')
        assert [str(p) for p in info.value.problems] == [
            "a.cmd: is required",
            "b.shell: must be true or false, got string 'yes'",
            "[2]: a template must be a table/object, got number 3",
        ]


class TestProcfile:
    def test_lines_become_shell_templates(self, tmp_path: Path) -> None:
        """Each ``name: command`` runs through the shell; comments and blank lines are skipped."""
        path = write(
            tmp_path / "Procfile",
            "# the web tier\n\nweb: python app.py --port $PORT\n   \nworker:bundle exec sidekiq\n",
        )
        web, worker = load_templates(path, environ={})
        assert web == Template(name="web", cmd="python app.py --port $PORT", shell=True, port=5000)
        assert worker == Template(name="worker", cmd="bundle exec sidekiq", shell=True, port=5100)

    def test_refused_names_are_named_by_line_number(self) -> None:
        """Names honcho runs but gaffer cannot are refused by line, with duplicates, all together."""
        text = "web: python app.py\n_web: x\n\nworker: y\n" + "a" * 65 + ": x\nweb: again\n"
        with pytest.raises(TemplateError) as info:
            templates_from_procfile(text, source="Procfile")
        assert [str(p) for p in info.value.problems] == [
            "line 2: the name '_web' is not valid: use letters, digits, '-' and '_' "
            "(no dots), starting with a letter or digit, at most 64 characters",
            f"line 5: the name {'a' * 65!r} is not valid: use letters, digits, '-' and '_' "
            "(no dots), starting with a letter or digit, at most 64 characters",
            "web.name: defined more than once",
        ]
        assert info.value.message.startswith("Procfile: 3 problems:\n")

    def test_skipped_lines_come_back_as_warnings(self, tmp_path: Path) -> None:
        """Lines honcho drops are left out of the templates and each comes back as a warning."""
        write(tmp_path / ".env", "A=1\nJUSTAKEY\n")
        path = write(tmp_path / "Procfile", "web: a\n  indented: b\nweb.admin: c\nworker: d\n")
        loaded = load(path)
        assert [t.name for t in loaded.templates] == ["web", "worker"]
        assert [str(w) for w in loaded.warnings] == [
            f"{tmp_path / '.env'}:2: skipped 'JUSTAKEY': expected KEY=value, KEY made of letters, "
            "digits and '_' not starting with a digit",
            f"{path}:2: skipped '  indented: b': indented (a process line starts with its name)",
            f"{path}:3: skipped 'web.admin: c': the name 'web.admin' has a character other than "
            "letters, digits, '_' and '-'",
        ]
        assert [t.port for t in loaded.templates] == [5000, 5100]

    def test_a_blank_command_line_still_takes_its_port_block(self, tmp_path: Path) -> None:
        """honcho counts `blank:  ` as a process type, so the types after it keep honcho's ports."""
        path = write(tmp_path / "Procfile", "web: a\nblank:  \nworker: b\n")
        assert [(t.name, t.port) for t in load(path, environ={}).templates] == [("web", 5000), ("worker", 5200)]

    def test_dotenv_and_procfile_problems_are_listed_together(self, tmp_path: Path) -> None:
        """A refused .env line and a refused Procfile line come back in one error."""
        env = write(tmp_path / ".env", "A=two words\n")
        path = write(tmp_path / "Procfile", "_web: a\n")
        with pytest.raises(TemplateError) as info:
            load(path)
        assert [str(p) for p in info.value.problems] == [
            f"{env}:1: unquoted space inside the value: honcho would read 'twowords'; quote the value",
            "line 1: the name '_web' is not valid: use letters, digits, '-' and '_' (no dots), "
            "starting with a letter or digit, at most 64 characters",
        ]

    @pytest.mark.parametrize(
        ("name", "text"),
        [("Procfile", ""), ("Procfile", "\n# nothing here\n"), ("empty.toml", ""), ("empty.json", "[]")],
    )
    def test_file_defining_nothing_is_an_error(self, tmp_path: Path, name: str, text: str) -> None:
        """A template file that defines nothing says so, whatever its format."""
        write(tmp_path / name, text)
        with pytest.raises(TemplateError) as info:
            load_templates(tmp_path / name)
        assert info.value.message == f"{tmp_path / name}: no templates defined"

    def test_dotenv_beside_procfile_is_every_templates_env(self, tmp_path: Path) -> None:
        """The .env next to the Procfile becomes each template's env (its PORT: the base port)."""
        write(tmp_path / ".env", "PORT=7000\nexport MODE='prod'\n")
        path = write(tmp_path / "Procfile", "web: app\nworker: work\n")
        templates = load_templates(path, environ={})
        assert [t.env for t in templates] == [{"MODE": "prod"}] * 2
        assert [t.port for t in templates] == [7000, 7100]

    def test_bad_dotenv_fails_the_load(self, tmp_path: Path) -> None:
        """A .env line honcho would stop on (an unclosed quote) refuses the file, naming file and line."""
        env = write(tmp_path / ".env", "A=1\nB='unclosed\n")
        path = write(tmp_path / "Procfile", "web: app\n")
        with pytest.raises(TemplateError) as info:
            load_templates(path)
        assert info.value.message == f"{path}: {env}:2: no closing quotation (honcho stops with this error too)"


class TestDotenv:
    """The line forms are in test_procfile_rules.py's table; here, the file around them."""

    def test_comments_blank_lines_and_later_values_win(self, tmp_path: Path) -> None:
        """Whole-line comments and blank lines are skipped; a repeated key keeps the last value."""
        path = write(tmp_path / ".env", "# comment\n\n  # indented comment\nA=1\nB=2\nA=3\n")
        assert read_dotenv(path) == DotEnv(values={"A": "3", "B": "2"})

    def test_missing_dotenv_is_empty(self, tmp_path: Path) -> None:
        """No .env simply means no extra environment."""
        assert read_dotenv(tmp_path / ".env") == DotEnv()

    def test_undecodable_dotenv_is_a_config_error(self, tmp_path: Path) -> None:
        """Bytes that are not UTF-8 give a readable error, not a traceback."""
        path = tmp_path / ".env"
        path.write_bytes(b"A=\xff\n")
        with pytest.raises(ConfigError, match=r"\.env: cannot read: "):
            read_dotenv(path)


class TestFiles:
    def test_missing_file(self, tmp_path: Path) -> None:
        """A file that is not there is a ConfigError naming it."""
        path = tmp_path / "nope.toml"
        with pytest.raises(ConfigError) as info:
            load_templates(path)
        assert info.value.message == f"{path}: no such file"

    def test_directory_instead_of_file(self, tmp_path: Path) -> None:
        """A directory cannot be read as templates; the error says so."""
        with pytest.raises(ConfigError, match="cannot read"):
            load_templates(tmp_path)

    def test_format_chosen_by_suffix(self, tmp_path: Path) -> None:
        """.toml and .json (any case) pick their parser; anything else is a Procfile."""
        toml = write(tmp_path / "a.TOML", '[web]\ncmd = "x"\n')
        json_file = write(tmp_path / "a.Json", '{"name": "web", "cmd": "x"}')
        procfile = write(tmp_path / "Procfile.dev", "web: x\n")
        assert load_templates(toml)[0].shell is False
        assert load_templates(json_file)[0].shell is False
        assert load_templates(procfile)[0].shell is True

    def test_find_default_file_prefers_toml_then_procfile_then_json(self, tmp_path: Path) -> None:
        """gaffer.toml wins over Procfile, which wins over gaffer.json."""
        assert find_default_file(tmp_path) is None
        write(tmp_path / "gaffer.json", "[]")
        assert find_default_file(tmp_path) == tmp_path / "gaffer.json"
        write(tmp_path / "Procfile", "web: x\n")
        assert find_default_file(tmp_path) == tmp_path / "Procfile"
        write(tmp_path / "gaffer.toml", "")
        assert find_default_file(tmp_path) == tmp_path / "gaffer.toml"

    def test_find_default_file_ignores_directories(self, tmp_path: Path) -> None:
        """A directory named like a default file is not a template file."""
        (tmp_path / "gaffer.toml").mkdir()
        write(tmp_path / "Procfile", "web: x\n")
        assert find_default_file(tmp_path) == tmp_path / "Procfile"


class TestHostileFiles:
    """Issue 7: files that made the loaders raise RecursionError or ValueError tracebacks."""

    @pytest.mark.parametrize(("name", "text"), [
        ("deep.json", "[" * 100_000 + "]" * 100_000),
        ("deep.toml", "a = " + "[" * 100_000 + "]" * 100_000),
        ("inline.toml", "a = " + "{b = " * 100_000 + "1" + "}" * 100_000),
        ("dotted.toml", "[" + ".".join(["a"] * 2_000) + "]\n"),
    ])
    def test_deep_nesting_is_one_clear_error(self, tmp_path: Path, name: str, text: str) -> None:
        """Deep nesting (100,000 levels; a 2,000-part dotted key) is a ConfigError, never a RecursionError."""
        path = write(tmp_path / name, text)
        with pytest.raises(ConfigError) as info:
            load_templates(path)
        assert str(path) in info.value.message and "nested" in info.value.message
        assert "\n" not in info.value.message

    @pytest.mark.parametrize("name", ["big.json", "big.toml"])
    def test_an_integer_too_long_to_convert_is_a_clear_error(self, tmp_path: Path, name: str) -> None:
        """An integer of 5,000 digits is refused with a ConfigError, not a ValueError."""
        number = "1" * 5000
        text = f'{{"web": {{"cmd": "x", "numprocesses": {number}}}}}' if name.endswith("json") else f'[web]\ncmd = "x"\nnumprocesses = {number}\n'
        with pytest.raises(ConfigError, match="integer"):
            load_templates(write(tmp_path / name, text))

    def test_nan_and_infinity_literals_are_refused_by_field(self, tmp_path: Path) -> None:
        """TOML's nan/inf and JSON's NaN/Infinity parse, and the field holding one is named."""
        cases = [
            ("t.json", '{"web": {"cmd": "x", "graceful_timeout": NaN}}', "web.graceful_timeout: must be finite, got nan"),
            ("t.json", '{"web": {"cmd": "x", "startsecs": Infinity}}', "web.startsecs: must be finite, got inf"),
            ("t.json", '{"web": {"cmd": "x", "startsecs": 1e999}}', "web.startsecs: must be finite, got inf"),
            ("t.json", '{"web": {"cmd": "x", "env": {"A": -Infinity}}}', "web.env.A: must be a string, got number -inf"),
            ("t.toml", '[web]\ncmd = "x"\nflapping = { window = nan }\n', "web.flapping.window: must be finite, got nan"),
            ("t.toml", '[web]\ncmd = "x"\ngraceful_timeout = -inf\n', "web.graceful_timeout: must be finite, got -inf"),
            ("t.toml", '[web]\ncmd = "x"\nargs = [nan]\n', "web.args[0]: must be a string, got number nan"),
        ]
        for name, text, problem in cases:
            with pytest.raises(TemplateError) as info:
                load_templates(write(tmp_path / name, text))
            assert [str(p) for p in info.value.problems] == [problem], text

    def test_count_past_the_format_limit_is_refused(self, tmp_path: Path) -> None:
        """numprocesses = 2**63-1 in a file is a TemplateError naming the field."""
        path = write(tmp_path / "t.toml", '[s]\ncmd = "x"\nnumprocesses = 9223372036854775807\n')
        with pytest.raises(TemplateError, match=r"s\.numprocesses: is too large: at most 1,000,000"):
            load_templates(path)
