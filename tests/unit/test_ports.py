"""The PORT rule (honcho's and foreman's), the template's ``port`` field and the loaders that
number Procfile and ``port = "auto"`` templates (issue 9: "$PORT")."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gaffer.agent.launch import build_env
from gaffer.common.errors import ConfigError, TemplateError
from gaffer.common.loaders import load_templates, templates_from_json, templates_from_toml
from gaffer.common.ports import (
    DEFAULT_BASE,
    choose_base,
    overlaps,
    range_problem,
)
from gaffer.common.template import parse_template


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def procfile_ports(tmp_path: Path, counts: dict[str, int], port: int | None = None) -> dict[str, str]:
    """Every instance's PORT for a Procfile of web, worker and clock with ``counts``."""
    path = write(tmp_path / "Procfile", "web: serve\nworker: work\nclock: tick\n")
    ports = {}
    for template in load_templates(path, port, environ={}):
        for ordinal in range(1, counts.get(template.name, 1) + 1):
            ports[f"{template.name}.{ordinal}"] = build_env(template, ordinal, "n1", {})["PORT"]
    return ports


class TestRule:
    def test_honchos_rule_blocks_of_100_per_type_next_port_per_instance(self, tmp_path: Path) -> None:
        """web.1=5000, web.2=5001, worker.1=5100: the Procfile rule, from 5000 or -p's base."""
        assert procfile_ports(tmp_path, {"web": 2, "worker": 3}) == {
            "web.1": "5000", "web.2": "5001",
            "worker.1": "5100", "worker.2": "5101", "worker.3": "5102", "clock.1": "5200",
        }
        assert procfile_ports(tmp_path, {"worker": 0}, 6100) == {"web.1": "6100", "clock.1": "6300"}

    @pytest.mark.parametrize(("base", "count", "problem"), [
        (8000, 3, None),
        (65535, 1, None),
        (65535, 0, None),
        (65534, 3, "65534 with 3 instances reaches port 65536, past 65535"),
        (0, 1, "must be a port 1..65535, got 0"),
        (70000, 0, "must be a port 1..65535, got 70000"),
    ])
    def test_a_range_must_fit_in_1_to_65535(self, base, count, problem) -> None:
        """The last instance's port is bounded as well as the base."""
        assert range_problem(base, count) == problem

    def test_base_comes_from_p_then_dotenv_then_environment_then_5000(self) -> None:
        """-p beats .env's PORT (honcho 2.0.0 lets .env win; foreman and gaffer do not), which
        beats gaffer's own PORT, which beats 5000."""
        assert choose_base(7000, "6000", "4000") == 7000
        assert choose_base(None, "6000", "4000") == 6000
        assert choose_base(None, None, "4000") == 4000
        assert choose_base(None, None, "") == DEFAULT_BASE
        assert choose_base(None, None, None) == DEFAULT_BASE

    @pytest.mark.parametrize(("dotenv", "os_port", "says"), [
        ("http", None, "PORT in .env: expected a port 1..65535, got 'http'"),
        ("70000", None, "PORT in .env: expected a port 1..65535, got '70000'"),
        (None, "-1", "PORT in the environment (the base port; -p overrides it): expected a port 1..65535, got '-1'"),
    ])
    def test_a_base_that_is_not_a_port_is_refused_naming_where_it_came_from(self, dotenv, os_port, says) -> None:
        """A bad PORT is one line naming .env or the environment, not a traceback."""
        with pytest.raises(ConfigError) as info:
            choose_base(None, dotenv, os_port)
        assert info.value.message == says

    @given(st.lists(st.tuples(st.integers(1, 300), st.integers(0, 40)), max_size=8))
    def test_overlaps_names_every_range_that_shares_a_port(self, spans) -> None:
        """A range is named in some pair exactly when it shares a port with another (brute force)."""
        ranges = [(f"t{i}", base, count) for i, (base, count) in enumerate(spans)]
        ports = {name: set(range(base, base + count)) for name, base, count in ranges}
        clashing = {a for a, b in itertools.permutations(ports, 2) if ports[a] & ports[b]}
        pairs = overlaps(ranges)
        assert all(ports[a] & ports[b] for a, b in pairs)
        named = {name for pair in pairs for name in pair}
        assert named == clashing


class TestTemplateField:
    def test_port_is_a_base_kept_through_the_plain_form(self) -> None:
        """port = 8000 is kept, and to_dict gives it back to parse_template."""
        web = parse_template({"cmd": "app", "port": 8000, "numprocesses": 3}, "web")
        assert web.port == 8000
        assert parse_template(web.to_dict(), "web") == web

    def test_the_port_is_a_launch_field_and_no_port_looks_as_before(self) -> None:
        """A new port restarts the instances (their PORT changes); without one, no 'port' in the
        plain form and the spec hash of before the field existed, so an upgrade restarts
        nothing and older agents still accept the spec."""
        plain = parse_template({"cmd": "app"}, "web")
        assert "port" not in plain.to_dict()
        assert plain.spec_hash() == "3490eb4c38d9d35a"
        hashes = {parse_template({"cmd": "app", "port": port}, "web").spec_hash() for port in (8000, 9000)}
        assert len(hashes | {plain.spec_hash()}) == 3

    @pytest.mark.parametrize(("fields", "says"), [
        ({"port": "auto"}, 'web.port: "auto" is numbered by the template\'s position in its file '
                           "(gaffer start, gafferctl apply FILE); here give a base port 1..65535"),
        ({"port": 0}, "web.port: must be >= 1, got 0"),
        ({"port": 70000}, "web.port: must be a port 1..65535, got 70000"),
        ({"port": "8000"}, "web.port: must be an integer, got string '8000'"),
        ({"port": True}, "web.port: must be an integer, got boolean true"),
        ({"port": 65000, "numprocesses": 1000}, "web.port: 65000 with 1000 instances reaches port 65999, past 65535"),
        ({"port": 8000, "env": {"PORT": "1"}}, "web.env.PORT: is set by gaffer per instance from port: give one of the two"),
    ])
    def test_bad_ports_are_refused_naming_the_field(self, fields, says) -> None:
        """Every bad port is one problem naming web.port (or the env.PORT it clashes with)."""
        with pytest.raises(TemplateError) as info:
            parse_template({"cmd": "app", **fields}, "web")
        assert [str(p) for p in info.value.problems] == [says]


class TestLoaders:
    def test_procfile_types_get_blocks_of_100_from_the_base(self, tmp_path: Path) -> None:
        """Each Procfile line's template gets port 5000, 5100, ... in file order; -p moves them."""
        path = write(tmp_path / "Procfile", "web: serve\nworker: work\nclock: tick\n")
        assert [t.port for t in load_templates(path, environ={})] == [5000, 5100, 5200]
        assert [t.port for t in load_templates(path, 6100, environ={"PORT": "9000"})] == [6100, 6200, 6300]
        assert [t.port for t in load_templates(path, environ={"PORT": "9000"})] == [9000, 9100, 9200]

    def test_dotenv_port_is_the_base_and_no_process_gets_it_as_is(self, tmp_path: Path) -> None:
        """PORT in .env is the base (over gaffer's own PORT, under -p) and is left out of env."""
        write(tmp_path / ".env", "PORT=7000\nMODE=prod\n")
        path = write(tmp_path / "Procfile", "web: serve\nworker: work\n")
        templates = load_templates(path, environ={"PORT": "9000"})
        assert [t.port for t in templates] == [7000, 7100]
        assert [t.env for t in templates] == [{"MODE": "prod"}] * 2
        assert [t.port for t in load_templates(path, 6100, environ={})] == [6100, 6200]

    def test_a_bad_base_is_refused_with_the_file(self, tmp_path: Path) -> None:
        """A PORT that is not a port refuses the Procfile in one line."""
        path = write(tmp_path / "Procfile", "web: serve\n")
        with pytest.raises(ConfigError) as info:
            load_templates(path, environ={"PORT": "http"})
        assert "PORT in the environment" in info.value.message

    def test_auto_in_toml_and_json_is_the_procfile_rule_by_position(self) -> None:
        """port = "auto" takes the block of the template's position in its file; a number is kept."""
        toml = '[a]\ncmd = "x"\n[b]\ncmd = "y"\nport = "auto"\n[c]\ncmd = "z"\nport = 8000\n'
        assert [t.port for t in templates_from_toml(toml)] == [None, 5100, 8000]
        assert [t.port for t in templates_from_toml(toml, port_base=lambda: 6100)] == [None, 6200, 8000]
        listed = json.dumps([{"name": "a", "cmd": "x", "port": "auto"}, {"name": "b", "cmd": "y", "port": "auto"}])
        assert [t.port for t in templates_from_json(listed)] == [5000, 5100]

    def test_a_file_without_auto_never_reads_the_base(self, tmp_path: Path) -> None:
        """A TOML file with no "auto" loads whatever PORT gaffer's environment holds."""
        path = write(tmp_path / "gaffer.toml", '[a]\ncmd = "x"\n')
        assert [t.port for t in load_templates(path, environ={"PORT": "not a port"})] == [None]
