"""Template validation: every bad input gets a message naming the template and the field."""

from __future__ import annotations

import grp
import json
import pwd

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gaffer.common.errors import Problem, TemplateError
from gaffer.common.limits import NAME_RE, NAME_RULE
from gaffer.common.template import (
    Flapping,
    LogFiles,
    Placement,
    Template,
    Update,
    check_on_host,
    parse_template,
    parse_templates,
)
from budget import examples

VALID_NAME = r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}"
NAME_HELP = (
    "is not a valid name: use letters, digits, '-' and '_' (no dots), "
    "starting with a letter or digit, at most 64 characters"
)


def problems_of(data: object, name: str | None = "web") -> list[str]:
    with pytest.raises(TemplateError) as info:
        parse_template(data, name)
    return [str(p) for p in info.value.problems]


# (template data under the key "web", every problem it must produce, in order)
BAD_INPUTS = [
    # unknown fields, with a hint when one is close
    ({"cmd": "x", "numprocess": 2}, ["web.numprocess: unknown field (did you mean 'numprocesses'?)"]),
    ({"cmd": "x", "comand": "y"}, ["web.comand: unknown field (did you mean 'cmd'?)"]),
    ({"cmd": "x", "zzzz": 1}, ["web.zzzz: unknown field"]),
    ({"cmd": "x", "flapping": {"attempt": 2}},
     ["web.flapping.attempt: unknown field (did you mean 'attempts'?)"]),
    ({"cmd": "x", "placement": {"node": ["a"]}},
     ["web.placement.node: unknown field (did you mean 'nodes'?)"]),
    ({"cmd": "x", "update": {"max_unavail": 2}},
     ["web.update.max_unavail: unknown field (did you mean 'max_unavailable'?)"]),
    ({"cmd": "x", "log": {"dir": "/tmp", "backup": 2}},
     ["web.log.backup: unknown field (did you mean 'backups'?)"]),
    # the template itself
    ("x", ["web: a template must be a table/object, got string 'x'"]),
    ([1], ["web: a template must be a table/object, got a list"]),
    ({"cmd": "x", "name": "other"}, ["web.name: does not match its key 'web'"]),
    # strings
    ({}, ["web.cmd: is required"]),
    ({"cmd": 5}, ["web.cmd: must be a string, got number 5"]),
    ({"cmd": ""}, ["web.cmd: must not be empty"]),
    ({"cmd": "  "}, ["web.cmd: must not be empty"]),
    ({"cmd": "a\0b"}, ["web.cmd: must not contain a NUL byte"]),
    ({"cmd": "x", "cwd": 5}, ["web.cwd: must be a string, got number 5"]),
    ({"cmd": "x", "cwd": ""}, ["web.cwd: must not be empty"]),
    ({"cmd": ["python"]}, ["web.cmd: must be a string, got a list"]),
    # args
    ({"cmd": "x", "args": 5}, ["web.args: must be a list of strings or a string, got number 5"]),
    ({"cmd": "x", "args": [1, None, True]},
     ["web.args[1]: must be a string, got null", "web.args[2]: must be a string, got boolean true"]),
    ({"cmd": "x", "args": "a 'b"}, ["web.args: cannot split into words: No closing quotation"]),
    ({"cmd": "x", "args": ["ok", "a\0"]}, ["web.args[1]: must not contain a NUL byte"]),
    # env
    ({"cmd": "x", "env": []}, ["web.env: must be a table/object, got a list"]),
    ({"cmd": "x", "env": {"A": None}}, ["web.env.A: must be a string, got null"]),
    ({"cmd": "x", "env": {"B": True}}, ["web.env.B: must be a string, got boolean true"]),
    ({"cmd": "x", "env": {"C": [1]}}, ["web.env.C: must be a string, got a list"]),
    ({"cmd": "x", "env": {"D": {"x": 1}}}, ["web.env.D: must be a string, got a table"]),
    ({"cmd": "x", "env": {"D": "a\0b"}}, ["web.env.D: must not contain a NUL byte"]),
    ({"cmd": "x", "env": {"": "x"}}, ["web.env: invalid variable name ''"]),
    ({"cmd": "x", "env": {"E=F": "x"}}, ["web.env: invalid variable name 'E=F'"]),
    # booleans
    ({"cmd": "x", "os_env": "yes"}, ["web.os_env: must be true or false, got string 'yes'"]),
    ({"cmd": "x", "shell": 1}, ["web.shell: must be true or false, got number 1"]),
    ({"cmd": "x", "redirect_input": None}, ["web.redirect_input: must be true or false, got null"]),
    # uid / gid
    ({"cmd": "x", "uid": True}, ["web.uid: must be a name or a number, got boolean true"]),
    ({"cmd": "x", "uid": -1}, ["web.uid: must be >= 0, got -1"]),
    ({"cmd": "x", "uid": 1.5}, ["web.uid: must be a name or a number, got number 1.5"]),
    ({"cmd": "x", "uid": "a\0"}, ["web.uid: must not contain a NUL byte"]),
    ({"cmd": "x", "gid": ""}, ["web.gid: must not be empty"]),
    ({"cmd": "x", "gid": [0]}, ["web.gid: must be a name or a number, got a list"]),
    # integers
    ({"cmd": "x", "numprocesses": -1}, ["web.numprocesses: must be >= 0, got -1"]),
    ({"cmd": "x", "numprocesses": 1.5}, ["web.numprocesses: must be an integer, got number 1.5"]),
    ({"cmd": "x", "numprocesses": "3"}, ["web.numprocesses: must be an integer, got string '3'"]),
    ({"cmd": "x", "numprocesses": True}, ["web.numprocesses: must be an integer, got boolean true"]),
    ({"cmd": "x", "numprocesses": None}, ["web.numprocesses: must be an integer, got null"]),
    # numbers
    ({"cmd": "x", "graceful_timeout": -1}, ["web.graceful_timeout: must be >= 0, got -1"]),
    ({"cmd": "x", "graceful_timeout": "10"},
     ["web.graceful_timeout: must be a number, got string '10'"]),
    ({"cmd": "x", "graceful_timeout": False},
     ["web.graceful_timeout: must be a number, got boolean false"]),
    ({"cmd": "x", "graceful_timeout": float("inf")}, ["web.graceful_timeout: must be finite, got inf"]),
    ({"cmd": "x", "graceful_timeout": float("nan")}, ["web.graceful_timeout: must be finite, got nan"]),
    ({"cmd": "x", "graceful_timeout": 10**400}, ["web.graceful_timeout: is too large: at most 2.592e+06"]),
    ({"cmd": "x", "startsecs": -0.5}, ["web.startsecs: must be >= 0, got -0.5"]),
    # stop_signal
    ({"cmd": "x", "stop_signal": "BOGUS"}, ["web.stop_signal: unknown signal 'BOGUS'"]),
    ({"cmd": "x", "stop_signal": 999}, ["web.stop_signal: unknown signal number 999"]),
    ({"cmd": "x", "stop_signal": 1.5}, ["web.stop_signal: a signal is a name or a number, got float"]),
    ({"cmd": "x", "stop_signal": True}, ["web.stop_signal: unknown signal True"]),
    ({"cmd": "x", "stop_signal": "²"}, ["web.stop_signal: unknown signal '²'"]),
    # restart / exitcodes
    ({"cmd": "x", "restart": "sometimes"},
     ["web.restart: must be one of always, on-failure, never, got string 'sometimes'"]),
    ({"cmd": "x", "restart": None}, ["web.restart: must be one of always, on-failure, never, got null"]),
    ({"cmd": "x", "restart": ["always"]},
     ["web.restart: must be one of always, on-failure, never, got a list"]),
    ({"cmd": "x", "exitcodes": "0"}, ["web.exitcodes: must be a list of integers, got string '0'"]),
    ({"cmd": "x", "exitcodes": [0, 256, -1, True, "1"]}, [
        "web.exitcodes[1]: must be an integer 0..255, got number 256",
        "web.exitcodes[2]: must be an integer 0..255, got number -1",
        "web.exitcodes[3]: must be an integer 0..255, got boolean true",
        "web.exitcodes[4]: must be an integer 0..255, got string '1'",
    ]),
    # redirect_output
    ({"cmd": "x", "redirect_output": "out"},
     ["web.redirect_output: must be a list of \"out\"/\"err\", got string 'out'"]),
    ({"cmd": "x", "redirect_output": ["out", "stdout", 1]}, [
        "web.redirect_output[1]: must be \"out\" or \"err\", got string 'stdout'",
        "web.redirect_output[2]: must be \"out\" or \"err\", got number 1",
    ]),
    # flapping
    ({"cmd": "x", "flapping": 5}, ["web.flapping: must be a table/object, got number 5"]),
    ({"cmd": "x", "flapping": {"attempts": 0}}, ["web.flapping.attempts: must be >= 1, got 0"]),
    ({"cmd": "x", "flapping": {"attempts": 2.5}},
     ["web.flapping.attempts: must be an integer, got number 2.5"]),
    ({"cmd": "x", "flapping": {"window": 0}}, ["web.flapping.window: must be > 0, got 0"]),
    ({"cmd": "x", "flapping": {"window": -1}}, ["web.flapping.window: must be > 0, got -1"]),
    ({"cmd": "x", "flapping": {"window": "30s"}},
     ["web.flapping.window: must be a number, got string '30s'"]),
    ({"cmd": "x", "flapping": {"retry_in": -1}}, ["web.flapping.retry_in: must be >= 0, got -1"]),
    ({"cmd": "x", "flapping": {"max_retry": -2}}, ["web.flapping.max_retry: must be >= -1, got -2"]),
    # log
    ({"cmd": "x", "log": "x"}, ["web.log: must be a table/object, got string 'x'"]),
    ({"cmd": "x", "log": {}}, ["web.log.dir: is required"]),
    ({"cmd": "x", "log": {"dir": 5}}, ["web.log.dir: must be a string, got number 5"]),
    ({"cmd": "x", "log": {"dir": "/t", "max_bytes": 100}}, ["web.log.max_bytes: must be >= 1024, got 100"]),
    ({"cmd": "x", "log": {"dir": "/t", "backups": -1}}, ["web.log.backups: must be >= 0, got -1"]),
    # placement
    ({"cmd": "x", "placement": []}, ["web.placement: must be a table/object, got a list"]),
    ({"cmd": "x", "placement": {"max_per_node": 0}}, ["web.placement.max_per_node: must be >= 1, got 0"]),
    ({"cmd": "x", "placement": {"nodes": "a"}},
     ["web.placement.nodes: must be a list of node names, got string 'a'"]),
    ({"cmd": "x", "placement": {"nodes": ["a", "", 3]}}, [
        f"web.placement.nodes[1]: must be a node name ({NAME_RULE}), got string ''",
        f"web.placement.nodes[2]: must be a node name ({NAME_RULE}), got number 3",
    ]),
    ({"cmd": "x", "placement": {"labels": []}}, ["web.placement.labels: must be a table/object, got a list"]),
    ({"cmd": "x", "placement": {"labels": {"-a": "x"}}}, ["web.placement.labels: invalid label key '-a'"]),
    ({"cmd": "x", "placement": {"labels": {"zone\n": "x"}}},
     ["web.placement.labels: invalid label key 'zone\\n'"]),
    ({"cmd": "x", "placement": {"labels": {"zone": 1}}},
     ["web.placement.labels.zone: must be a string, got number 1"]),
    # update
    ({"cmd": "x", "update": 5}, ["web.update: must be a table/object, got number 5"]),
    ({"cmd": "x", "update": {"max_unavailable": 0}}, ["web.update.max_unavailable: must be >= 1, got 0"]),
    ({"cmd": "x", "update": {"progress_deadline": "soon"}},
     ["web.update.progress_deadline: must be a number, got string 'soon'"]),
    ({"cmd": "x", "update": {"progress_deadline": 0.5}}, ["web.update.progress_deadline: must be >= 1, got 0.5"]),
]


class TestBadInput:
    @pytest.mark.parametrize(
        ("data", "expected"), BAD_INPUTS, ids=[repr(d)[:60] for d, _ in BAD_INPUTS]
    )
    def test_bad_input_names_template_and_field(self, data: object, expected: list[str]) -> None:
        """Each bad value produces exactly the listed problems, in order."""
        assert problems_of(data) == expected

    @pytest.mark.parametrize(
        ("name", "label"),
        [
            ("web.1", "web.1"),
            ("a" * 65, "a" * 65),
            ("-web", "-web"),
            ("_web", "_web"),
            ("web\n", "web\n"),
            ("wéb", "wéb"),
            ("web app", "web app"),
        ],
    )
    def test_invalid_name_is_rejected_with_the_naming_rules(self, name: str, label: str) -> None:
        """Names with dots, bad first characters, non-ASCII or over 64 characters are refused."""
        assert problems_of({"cmd": "x", "name": name}, None) == [f"{label}.name: {name!r} {NAME_HELP}"]

    @pytest.mark.parametrize(
        ("name", "message"),
        [
            ("", "<template>.name: must not be empty"),
            (5, "<template>.name: must be a string, got number 5"),
            (None, "<template>.name: is required"),
        ],
    )
    def test_missing_or_non_string_name(self, name: object, message: str) -> None:
        """Without a usable name the problem is reported under <template>."""
        assert problems_of({"cmd": "x", "name": name}, None) == [message]

    def test_missing_name_key_is_required(self) -> None:
        """A template given without a key needs a name field."""
        assert problems_of({"cmd": "x"}, None) == ["<template>.name: is required"]

    @pytest.mark.parametrize("name", ["a", "9", "a" * 64, "web-app_2", "Web"])
    def test_valid_names_are_accepted(self, name: str) -> None:
        """Letters, digits, '-' and '_' up to 64 characters, starting alphanumeric."""
        assert parse_template({"cmd": "x"}, name).name == name

    def test_every_problem_of_one_template_is_reported(self) -> None:
        """Validation does not stop at the first bad field."""
        data = {
            "name": "other",
            "cmd": 5,
            "numprocesses": -2,
            "restart": "sometimes",
            "flapping": {"attempts": 0, "window": 0},
            "bogus": 1,
        }
        assert problems_of(data) == [
            "web.name: does not match its key 'web'",
            "web.bogus: unknown field",
            "web.cmd: must be a string, got number 5",
            "web.numprocesses: must be >= 0, got -2",
            "web.restart: must be one of always, on-failure, never, got string 'sometimes'",
            "web.flapping.attempts: must be >= 1, got 0",
            "web.flapping.window: must be > 0, got 0",
        ]

    def test_error_message_lists_problems_one_per_line(self) -> None:
        """Several problems make a counted, indented list in the message."""
        with pytest.raises(TemplateError) as info:
            parse_template({"cmd": 5, "numprocesses": -1}, "web")
        assert info.value.message == (
            "2 problems:\n"
            "  web.cmd: must be a string, got number 5\n"
            "  web.numprocesses: must be >= 0, got -1"
        )

    def test_error_to_dict_carries_code_and_each_problem(self) -> None:
        """The wire form has the stable code and structured problems."""
        with pytest.raises(TemplateError) as info:
            parse_template({"cmd": 5}, "web")
        assert info.value.to_dict() == {
            "code": "invalid_template",
            "message": "web.cmd: must be a string, got number 5",
            "problems": [{"where": "web", "field": "cmd", "message": "must be a string, got number 5"}],
        }


class TestParseTemplates:
    def test_all_problems_of_all_templates_in_one_error(self) -> None:
        """A file with several bad templates reports every problem of every template at once."""
        items = [
            ("web", {"cmd": "x", "numprocesses": -1}),
            ("ok", {"cmd": "fine"}),
            ("worker", {"cmd": "", "restart": "no", "flapping": {"attempts": 0}}),
            (None, {"cmd": "x"}),
            ("bad.name", "nope"),
        ]
        with pytest.raises(TemplateError) as info:
            parse_templates(items, source="gaffer.toml")
        assert [str(p) for p in info.value.problems] == [
            "web.numprocesses: must be >= 0, got -1",
            "worker.cmd: must not be empty",
            "worker.restart: must be one of always, on-failure, never, got string 'no'",
            "worker.flapping.attempts: must be >= 1, got 0",
            "[3].name: is required",
            "bad.name: a template must be a table/object, got string 'nope'",
        ]
        assert info.value.source == "gaffer.toml"
        assert info.value.message.startswith("gaffer.toml: 6 problems:\n")

    def test_duplicate_names_are_reported(self) -> None:
        """Two templates with one name is an error naming it."""
        with pytest.raises(TemplateError) as info:
            parse_templates([(None, {"name": "web", "cmd": "a"}), (None, {"name": "web", "cmd": "b"})])
        assert info.value.problems == [Problem("web", "name", "defined more than once")]

    def test_valid_templates_come_back_in_order(self) -> None:
        """Good input returns one Template per item, in input order."""
        templates = parse_templates([("b", {"cmd": "x"}), ("a", {"cmd": "y"})])
        assert [t.name for t in templates] == ["b", "a"]


class TestDefaults:
    def test_minimal_template_gets_documented_defaults(self) -> None:
        """Only name and cmd are needed; every other field has its documented default."""
        t = parse_template({"cmd": "python app.py"}, "web")
        assert t == Template(name="web", cmd="python app.py")
        assert (t.args, t.env, t.os_env, t.shell) == ((), {}, True, False)
        assert (t.uid, t.gid, t.cwd) == (None, None, None)
        assert (t.numprocesses, t.graceful_timeout, t.stop_signal, t.startsecs) == (1, 10.0, "TERM", 1.0)
        assert (t.restart, t.exitcodes) == ("always", (0,))
        assert t.flapping == Flapping(attempts=5, window=30.0, retry_in=10.0, max_retry=3)
        assert (t.redirect_output, t.redirect_input, t.log) == (("out", "err"), False, None)
        assert t.placement == Placement(max_per_node=None, nodes=(), labels={})
        assert t.update == Update(max_unavailable=1)

    def test_partial_flapping_table_keeps_other_defaults(self) -> None:
        """Setting one flapping field leaves the rest at their defaults."""
        t = parse_template({"cmd": "x", "flapping": {"attempts": 2}}, "web")
        assert t.flapping == Flapping(attempts=2, window=30.0, retry_in=10.0, max_retry=3)

    def test_log_table_defaults(self) -> None:
        """A log table needs only dir: 10 MiB files, 5 backups."""
        t = parse_template({"cmd": "x", "log": {"dir": "/var/log/x"}}, "web")
        assert t.log == LogFiles(dir="/var/log/x", max_bytes=10 * 1024 * 1024, backups=5)


class TestConversions:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [("TERM", "TERM"), ("sigkill", "KILL"), ("SIGHUP", "HUP"), (" int ", "INT"), (9, "KILL"),
         ("15", "TERM")],
    )
    def test_stop_signal_is_normalised_to_short_name(self, value: object, expected: str) -> None:
        """Any spelling of a signal is stored as its short upper-case name."""
        assert parse_template({"cmd": "x", "stop_signal": value}, "web").stop_signal == expected

    def test_args_string_is_split_like_a_shell(self) -> None:
        """A string of args is split with shell quoting rules."""
        t = parse_template({"cmd": "x", "args": "-v --name 'a b'"}, "web")
        assert t.args == ("-v", "--name", "a b")

    def test_numeric_args_and_env_values_become_strings(self) -> None:
        """Numbers are accepted where a string is needed and kept as text."""
        t = parse_template({"cmd": "x", "args": ["--port", 8080], "env": {"WORKERS": 4}}, "web")
        assert t.args == ("--port", "8080")
        assert t.env == {"WORKERS": "4"}

    def test_single_exit_code_becomes_a_tuple(self) -> None:
        """exitcodes = 2 means (2,)."""
        assert parse_template({"cmd": "x", "exitcodes": 2}, "web").exitcodes == (2,)

    @pytest.mark.parametrize(
        ("value", "expected"),
        [(True, ("out", "err")), (False, ()), (["err", "out", "err"], ("out", "err")), (["err"], ("err",))],
    )
    def test_redirect_output_is_canonical(self, value: object, expected: tuple[str, ...]) -> None:
        """Booleans mean both or none; lists are deduplicated into out, err order."""
        assert parse_template({"cmd": "x", "redirect_output": value}, "web").redirect_output == expected

    @pytest.mark.parametrize(("value", "expected"), [(False, None), (None, None), (True, Flapping())])
    def test_flapping_can_be_switched_off_or_on(self, value: object, expected: Flapping | None) -> None:
        """false/null disable flapping protection; true keeps the defaults."""
        assert parse_template({"cmd": "x", "flapping": value}, "web").flapping == expected

    def test_matching_name_field_is_allowed(self) -> None:
        """A name field equal to its key is fine."""
        assert parse_template({"name": "web", "cmd": "x"}, "web").name == "web"

    def test_with_count_changes_only_numprocesses(self) -> None:
        """with_count returns a copy with a new count."""
        t = parse_template({"cmd": "x", "numprocesses": 2}, "web")
        assert t.with_count(7) == parse_template({"cmd": "x", "numprocesses": 7}, "web")


# ----------------------------------------------------------------- round trip

NO_NUL_TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), max_size=20
)
NON_BLANK = NO_NUL_TEXT.filter(lambda s: s.strip() != "")
ENV_NAME = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,15}", fullmatch=True)
LABEL_KEY = st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9_./-]{0,10}[A-Za-z0-9])?", fullmatch=True)
SECONDS = st.floats(min_value=0, max_value=1e6, allow_nan=False, allow_infinity=False)
IDENTITY = st.one_of(st.none(), st.integers(0, 2**31), NON_BLANK)
SIGNALS = st.sampled_from(["TERM", "KILL", "HUP", "INT", "QUIT", "USR1", "USR2", "WINCH"])


def optional_fields(**strategies: st.SearchStrategy) -> st.SearchStrategy[dict]:
    """A dict holding any subset of the given fields."""
    return st.fixed_dictionaries({}, optional=strategies)


FLAPPING_DATA = st.one_of(
    st.none(),
    optional_fields(
        attempts=st.integers(1, 100),
        window=st.floats(min_value=0.001, max_value=1e6, allow_nan=False),
        retry_in=SECONDS,
        max_retry=st.integers(-1, 100),
    ),
)
TEMPLATE_DATA = st.builds(
    lambda name, cmd, rest: {"name": name, "cmd": cmd, **rest},
    st.from_regex(VALID_NAME, fullmatch=True),
    NON_BLANK,
    optional_fields(
        args=st.lists(NO_NUL_TEXT, max_size=4),
        env=st.dictionaries(ENV_NAME, NO_NUL_TEXT, max_size=4),
        os_env=st.booleans(),
        uid=IDENTITY,
        gid=IDENTITY,
        cwd=st.one_of(st.none(), NON_BLANK),
        shell=st.booleans(),
        numprocesses=st.integers(0, 10_000),
        graceful_timeout=SECONDS,
        stop_signal=SIGNALS,
        startsecs=SECONDS,
        restart=st.sampled_from(["always", "on-failure", "never"]),
        exitcodes=st.lists(st.integers(0, 255), max_size=4),
        flapping=FLAPPING_DATA,
        redirect_output=st.sampled_from([[], ["out"], ["err"], ["out", "err"]]),
        redirect_input=st.booleans(),
        log=st.one_of(
            st.none(),
            st.builds(
                lambda d, rest: {"dir": d, **rest},
                NON_BLANK,
                optional_fields(max_bytes=st.integers(1024, 2**40), backups=st.integers(0, 50)),
            ),
        ),
        placement=optional_fields(
            max_per_node=st.one_of(st.none(), st.integers(1, 1000)),
            nodes=st.lists(st.from_regex(NAME_RE, fullmatch=True), max_size=3),
            labels=st.dictionaries(LABEL_KEY, NO_NUL_TEXT, max_size=3),
        ),
        update=optional_fields(
            max_unavailable=st.integers(1, 100), progress_deadline=st.sampled_from([1.0, 30.5, 600.0, 3600]),
        ),
    ),
)


class TestRoundTrip:
    @settings(max_examples=examples(200), deadline=None)
    @given(TEMPLATE_DATA)
    def test_to_dict_parses_back_to_an_equal_template(self, data: dict) -> None:
        """to_dict() is plain data that parse_template turns into the same Template."""
        template = parse_template(data)
        again = parse_template(template.to_dict())
        assert again == template
        assert again.to_dict() == template.to_dict()

    @settings(max_examples=100, deadline=None)
    @given(TEMPLATE_DATA)
    def test_to_dict_survives_json(self, data: dict) -> None:
        """The plain form crosses JSON (HTTP bodies) without losing anything."""
        template = parse_template(data)
        assert parse_template(json.loads(json.dumps(template.to_dict()))) == template

    @settings(max_examples=100, deadline=None)
    @given(TEMPLATE_DATA)
    def test_shared_spec_is_to_dict_without_the_count_and_copies_nothing_nested(self, data: dict) -> None:
        """shared_spec() equals to_dict() less numprocesses, and shares its nested values with
        the template's kept form (one dict per template, not a deep copy)."""
        template = parse_template(data)
        shared = template.shared_spec()
        whole = template.to_dict()
        del whole["numprocesses"]
        assert shared == whole
        again = template.shared_spec()
        assert again is not shared and all(again[key] is shared[key] for key in shared)

    @settings(max_examples=100, deadline=None)
    @given(TEMPLATE_DATA, st.integers(0, 10_000))
    def test_spec_hash_ignores_numprocesses(self, data: dict, count: int) -> None:
        """Scaling never changes the spec hash, so it never restarts anything."""
        template = parse_template(data)
        assert template.with_count(count).spec_hash() == template.spec_hash()


class TestSpecHash:
    BASE = {"cmd": "python app.py", "args": ["-v"], "env": {"A": "1", "B": "2"}}

    @pytest.mark.parametrize(
        "change",
        [
            {"cmd": "python other.py"},
            {"args": ["-q"]},
            {"env": {"A": "1", "B": "3"}},
            {"env": {"A": "1"}},
            {"os_env": False},
            {"uid": "nobody"},
            {"gid": "nogroup"},
            {"cwd": "/srv"},
            {"shell": True},
            {"redirect_output": ["out"]},
            {"redirect_input": True},
        ],
        ids=lambda change: next(iter(change)),
    )
    def test_spec_hash_changes_with_what_the_process_runs(self, change: dict) -> None:
        """Any change to how the process is launched changes the hash."""
        base = parse_template(self.BASE, "web")
        changed = parse_template({**self.BASE, **change}, "web")
        assert changed.spec_hash() != base.spec_hash()

    def test_spec_hash_ignores_env_order(self) -> None:
        """Equal templates hash equal whatever order the env was written in."""
        one = parse_template({"cmd": "x", "env": {"A": "1", "B": "2"}}, "web")
        two = parse_template({"cmd": "x", "env": {"B": "2", "A": "1"}}, "web")
        assert one.spec_hash() == two.spec_hash()


# ----------------------------------------------------------------- check_on_host


def unused_id(lookup) -> int:
    """A numeric id with no entry on this host."""
    candidate = 54321
    while True:
        try:
            lookup(candidate)
        except KeyError:
            return candidate
        candidate += 1


GROUP_NAMES = {g.gr_name for g in grp.getgrall()}
NOBODY_GROUP = "nogroup" if "nogroup" in GROUP_NAMES else "nobody"


class TestCheckOnHost:
    @pytest.mark.parametrize(
        ("uid", "gid"),
        [("nobody", NOBODY_GROUP), ("root", "root"), (0, 0), ("65534", "65534"), (None, None),
         (pwd.getpwnam("nobody").pw_uid, grp.getgrnam(NOBODY_GROUP).gr_gid)],
    )
    def test_existing_user_and_group_pass(self, uid: object, gid: object) -> None:
        """Known names and numeric ids (as numbers or digit strings) raise no problem."""
        t = parse_template({"cmd": "x", "uid": uid, "gid": gid}, "web")
        assert check_on_host(t) == []

    def test_unknown_user_and_group_are_both_flagged(self) -> None:
        """Each unknown identity gets its own problem naming the field."""
        t = parse_template({"cmd": "x", "uid": "no-such-user-x", "gid": "no-such-group-x"}, "web")
        assert check_on_host(t) == [
            Problem("web", "uid", "unknown user 'no-such-user-x' on this host"),
            Problem("web", "gid", "unknown group 'no-such-group-x' on this host"),
        ]

    def test_unknown_numeric_ids_are_flagged(self) -> None:
        """A number with no passwd/group entry is unknown too."""
        uid, gid = unused_id(pwd.getpwuid), unused_id(grp.getgrgid)
        t = parse_template({"cmd": "x", "uid": uid, "gid": gid}, "web")
        assert check_on_host(t) == [
            Problem("web", "uid", f"unknown user {uid} on this host"),
            Problem("web", "gid", f"unknown group {gid} on this host"),
        ]

    @pytest.mark.parametrize("value", ["²", "1" * 40])
    def test_odd_ids_are_problems_not_crashes(self, value: object) -> None:
        """Superscript digits and ids beyond the C range are reported, never raised."""
        t = parse_template({"cmd": "x", "uid": value, "gid": value}, "web")
        assert [(p.field, p.message) for p in check_on_host(t)] == [
            ("uid", f"unknown user {value!r} on this host"),
            ("gid", f"unknown group {value!r} on this host"),
        ]


class TestBounds:
    """Issue 7: every number in a template is finite and bounded, every name has a pattern."""

    @pytest.mark.parametrize(("data", "expected"), [
        ({"cmd": "x", "numprocesses": 9223372036854775807},
         ["web.numprocesses: is too large: at most 1,000,000, got 9223372036854775807"]),
        ({"cmd": "x", "numprocesses": 10**400},
         ["web.numprocesses: is too large: at most 1,000,000, got a number of 401 digits"]),
        ({"cmd": "x", "startsecs": 1e9}, ["web.startsecs: is too large: at most 2.592e+06, got 1e+09"]),
        ({"cmd": "x", "flapping": {"window": 1e12}},
         ["web.flapping.window: is too large: at most 2.592e+06, got 1e+12"]),
        ({"cmd": "x", "flapping": {"attempts": 10**12}},
         ["web.flapping.attempts: is too large: at most 1,000,000, got 1000000000000"]),
        ({"cmd": "x", "placement": {"max_per_node": 10**7}},
         ["web.placement.max_per_node: is too large: at most 1,000,000, got 10000000"]),
        ({"cmd": "x", "update": {"max_unavailable": 10**7}},
         ["web.update.max_unavailable: is too large: at most 1,000,000, got 10000000"]),
        ({"cmd": "x", "log": {"dir": "/l", "max_bytes": 2**50}},
         ["web.log.max_bytes: is too large: at most 1,099,511,627,776, got 1125899906842624"]),
        ({"cmd": "x", "uid": 2**40}, ["web.uid: is too large: at most 4294967294, got 1099511627776"]),
        ({"cmd": "x", "args": [float("nan")]}, ["web.args[0]: must be a string, got number nan"]),
        ({"cmd": "x", "env": {"A": float("inf")}}, ["web.env.A: must be a string, got number inf"]),
        ({"cmd": "x", "exitcodes": [0] * 300}, ["web.exitcodes: has 300 items: at most 256"]),
        ({"cmd": "x", "placement": {"nodes": ["n" * 65]}},
         [f"web.placement.nodes[0]: must be a node name ({NAME_RULE}), got a string"]),
        ({"cmd": "x", "stop_signal": "9" * 5000}, ["web.stop_signal: unknown signal of 5000 characters"]),
    ], ids=lambda v: repr(v)[:50])
    def test_out_of_bounds_values_are_named(self, data: dict, expected: list[str]) -> None:
        """Counts, durations, sizes and ids past their limits are problems naming the field."""
        assert problems_of(data) == expected

    def test_no_field_takes_nan_or_infinity(self) -> None:
        """Float fields refuse NaN and both infinities, and so do args and env values."""
        for value in (float("nan"), float("inf"), float("-inf")):
            for field in ("graceful_timeout", "startsecs", "flapping.window", "flapping.retry_in"):
                head, _, tail = field.partition(".")
                data = {"cmd": "x", head: {tail: value}} if tail else {"cmd": "x", head: value}
                assert problems_of(data) == [f"web.{field}: must be finite, got {value}"]
            assert problems_of({"cmd": "x", "args": ["a", value]}) == [f"web.args[1]: must be a string, got number {value}"]
            assert problems_of({"cmd": "x", "env": {"B": value}}) == [f"web.env.B: must be a string, got number {value}"]

    def test_a_stored_count_past_the_format_limit_reads_back(self) -> None:
        """The store reads counts written before the limit existed (max_count=MAX_INT)."""
        t = parse_template({"cmd": "x", "numprocesses": 2**63 - 1}, "web", max_count=2**63 - 1)
        assert t.numprocesses == 2**63 - 1

    @settings(max_examples=examples(300), deadline=None)
    @given(st.dictionaries(
        st.sampled_from(["numprocesses", "graceful_timeout", "startsecs", "uid", "exitcodes", "args"]),
        st.one_of(st.integers(), st.floats(), st.text(max_size=30), st.booleans(), st.none(),
                  st.lists(st.one_of(st.integers(), st.floats()), max_size=3)),
    ))
    def test_any_numbers_give_a_template_or_template_error(self, fields: dict) -> None:
        """Whatever numbers come in, parsing ends in a Template or a TemplateError."""
        try:
            t = parse_template({"cmd": "x", **fields}, "web")
        except TemplateError:
            return
        assert 0 <= t.numprocesses <= 1_000_000
        assert 0 <= t.graceful_timeout <= 30 * 86_400 and 0 <= t.startsecs <= 30 * 86_400
