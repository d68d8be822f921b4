"""Where PORT reaches: each instance's environment, ``ps`` rows and table, the controller's
scale, and ``gaffer start``'s reading of a file with ``-c``/``-p`` (issue 9: "$PORT")."""

from __future__ import annotations

from pathlib import Path

import pytest

from gaffer.agent.launch import build_env, build_launch
from gaffer.cli import start as gaffer_cli
from gaffer.cli.tables import ps_table, template_text
from gaffer.common.errors import ConfigError, SpawnError, TemplateError
from gaffer.common.template import Template, parse_template
from gaffer.controller.api import Api
from gaffer.controller.changes import Changes
from gaffer.controller.controller import Controller
from gaffer.controller.oneoffs import OneOffs
from gaffer.controller.settings import ControllerSettings
from gaffer.controller.staging import Stages
from gaffer.controller.template_rows import compare
from gaffer.testing import template
from gaffer.testing.channel import MemoryRouter
from gaffer.testing.clock import FakeClock
from tests.unit.test_api import FakeAgents, FakeDesired, FakeInfo, row, up

OS_ENV = {"PATH": "/usr/bin:/bin", "PORT": "3000"}


def web(**fields) -> Template:
    return parse_template({"cmd": "app", "port": 8000, "numprocesses": 3, **fields}, "web")


class TestEnvironment:
    def test_each_instance_gets_its_own_port_over_an_inherited_one(self) -> None:
        """web.1 gets PORT=8000, web.3 PORT=8002, whatever PORT gaffer itself had; a template
        without port leaves an inherited PORT as it was."""
        assert [build_env(web(), n, "n1", OS_ENV)["PORT"] for n in (1, 2, 3)] == ["8000", "8001", "8002"]
        plain = parse_template({"cmd": "app"}, "web")
        assert build_env(plain, 2, "n1", OS_ENV)["PORT"] == "3000"
        assert "PORT" not in build_env(plain, 2, "n1", {})

    def test_a_one_off_run_gets_no_port_of_an_instance(self) -> None:
        """web.run-1 would share web.1's port: it gets none from the template."""
        assert "PORT" not in build_env(web(), "run-1", "n1", {})

    def test_port_expands_in_args(self) -> None:
        """$PORT in args is the instance's own, as a Procfile's `--port $PORT` expects."""
        spec = build_launch(parse_template({"cmd": "serve", "args": ["--port", "$PORT"], "port": 6100}, "web"), 2, "n1", {})
        assert spec.argv == ("serve", "--port", "6101")

    def test_an_ordinal_past_65535_is_a_spawn_error(self) -> None:
        """A stored count the range check never saw fails the spawn with one line, not a bad PORT."""
        with pytest.raises(SpawnError) as info:
            build_env(web(port=65535, numprocesses=1), 2, "n1", {})
        assert info.value.message == "port 65535 with ordinal 2 reaches port 65536, past 65535"


class TestPs:
    async def test_ps_rows_carry_each_instances_port(self) -> None:
        """ps: `port` per instance from its template and ordinal; null without one."""
        nodes = {"a": up("a", row("web.1"), row("web.2"), row("plain.1"))}
        desired = FakeDesired(nodes)
        desired.put(template("web", numprocesses=2, port=6100), template("plain"))
        desired.placement.update({("web", 1): "a", ("web", 2): "a", ("plain", 1): "a"})
        agents = FakeAgents(nodes)
        agents.answers["stats"] = {}
        api = Api(desired, agents, OneOffs(), Stages(), Changes(), FakeInfo())
        rows = await api.ps({})
        assert [(r["id"], r["port"]) for r in rows] == [("plain.1", None), ("web.1", 6100), ("web.2", 6101)]

    def test_the_table_has_a_port_column_only_when_some_instance_has_one(self) -> None:
        """A PORT column beside the pid when a port is set; the table is unchanged otherwise."""
        base = {"node": "n1", "state": "running", "pid": 10, "restarts": 0, "cpu": None, "mem": None, "uptime": None}
        shown = ps_table([{**base, "id": "web.1", "port": 5000}, {**base, "id": "job.1", "port": None}])
        assert shown.splitlines()[0].split() == ["ID", "NODE", "STATE", "PID", "PORT", "RESTARTS", "CPU", "MEM", "UPTIME"]
        assert shown.splitlines()[1].split()[:5] == ["web.1", "n1", "running", "10", "5000"]
        assert "PORT" not in ps_table([{**base, "id": "job.1"}])

    def test_get_shows_the_ports_of_a_template_with_one(self) -> None:
        """`get`: the port range and the rule, only for a template with a port."""
        row = {"name": "web", "version": 1, "paused": False, "numprocesses": 4, "placed": 4, "running": 4,
               "spec": {"cmd": "serve", "args": [], "placement": {}, "port": 5000}}
        assert "port        5000..5003 (PORT of instance n: 5000 + n - 1)" in template_text(row).splitlines()
        assert "port" not in template_text({**row, "spec": {"cmd": "serve", "args": [], "placement": {}}})


async def test_scale_past_the_last_port_is_refused_naming_the_field(tmp_path: Path) -> None:
    """The controller refuses a scale whose last instance would need a port past 65535, and
    keeps the count."""
    clock = FakeClock(start=1000.0)
    controller = Controller(ControllerSettings(data_dir=tmp_path / "data"), clock=clock.time)
    await controller.serve_on(MemoryRouter(clock=clock).channel)
    try:
        cluster = controller.cluster
        assert cluster is not None
        await cluster.apply([template("web", numprocesses=1, port=65530)])
        assert await cluster.scale("web", 6) == 6
        with pytest.raises(TemplateError) as info:
            await cluster.scale("web", "+1")
        assert [str(p) for p in info.value.problems] == ["web.port: 65530 with 7 instances reaches port 65536, past 65535"]
        assert cluster.templates["web"].template.numprocesses == 6
    finally:
        await controller.stop()


class TestReadingForStart:
    def write(self, tmp_path: Path, text: str, name: str = "Procfile") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    def test_c_and_p_set_counts_and_the_base(self, tmp_path: Path, monkeypatch) -> None:
        """-c web=2,worker=3 -p 6100: counts from -c, ports from 6100 in blocks of 100."""
        monkeypatch.delenv("PORT", raising=False)
        path = self.write(tmp_path, "web: serve\nworker: work\n")
        counts = gaffer_cli.parse_counts(("web=2,worker=3",))
        templates = gaffer_cli.read_templates(path, counts, port=6100)
        assert [(t.name, t.numprocesses, t.port) for t in templates] == [("web", 2, 6100), ("worker", 3, 6200)]

    def test_unknown_names_in_c_are_refused_in_one_line(self, tmp_path: Path) -> None:
        """Names the Procfile lacks are all named, with the ones it has."""
        path = self.write(tmp_path, "web: serve\nworker: work\n")
        with pytest.raises(ConfigError) as info:
            gaffer_cli.read_templates(path, {"web": 1, "wrker": 2, "clock": 1})
        assert info.value.message == f"--concurrency: {path} has no process type wrker, clock (it has: web, worker)"

    def test_a_count_that_overruns_its_block_is_refused(self, tmp_path: Path, monkeypatch) -> None:
        """web=101 would give web.101 worker.1's port: refused before anything starts."""
        monkeypatch.delenv("PORT", raising=False)
        path = self.write(tmp_path, "web: serve\nworker: work\n")
        with pytest.raises(TemplateError) as info:
            gaffer_cli.read_templates(path, {"web": 101})
        assert [str(p) for p in info.value.problems] == [
            "worker.port: ports 5000..5100 of web and 5100..5100 of worker overlap on this host"
        ]

    def test_c_cannot_push_a_port_past_65535(self, tmp_path: Path) -> None:
        """A -c count is checked against the port range, as a file's count is."""
        path = self.write(tmp_path, '[web]\ncmd = "serve"\nport = 65000\n', "gaffer.toml")
        with pytest.raises(TemplateError) as info:
            gaffer_cli.read_templates(path, {"web": 600})
        assert [str(p) for p in info.value.problems] == ["web.port: 65000 with 600 instances reaches port 65599, past 65535"]


def test_adding_or_changing_a_port_is_an_update_that_relaunches() -> None:
    """The store's comparison: a port added to (or changed on) a stored template is an update
    of its launch spec; the same template without port is unchanged."""
    before = parse_template({"cmd": "app"}, "web")
    assert compare("web", before.spec_json(), web(numprocesses=1)) == ("updated", True)
    assert compare("web", web(numprocesses=1).spec_json(), web(numprocesses=1, port=9000)) == ("updated", True)
    assert compare("web", web(numprocesses=1).spec_json(), before) == ("updated", True)
    assert compare("web", before.spec_json(), parse_template({"cmd": "app"}, "web")) == ("unchanged", False)
