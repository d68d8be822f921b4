"""config_changes: what a SIGHUP reload applies and what needs a restart (issue 9, item 3)."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gaffer.agent import daemon as agent_daemon
from gaffer.common.errors import ConfigError
from gaffer.common.reload import Change, Changes, config_changes
from gaffer.controller import daemon as controller_daemon
from gaffer.controller.settings import ControllerSettings

RELOADABLE = frozenset({"log_level", "node_grace"})


class TestConfigChanges:
    def test_nothing_changed(self):
        """The same values: no change, and one line saying so."""
        values = {"bind": "tcp://a:1", "log_level": "info"}
        changes = config_changes(values, dict(values), RELOADABLE)
        assert changes == Changes()
        assert changes.lines("c.toml") == [(logging.INFO, "reloaded c.toml: nothing changed")]

    def test_reloadable_settings_are_applied(self):
        """A changed reloadable setting is applied, with its old and new values."""
        changes = config_changes({"log_level": "info"}, {"log_level": "debug"}, RELOADABLE)
        assert changes.applied == (Change("log_level", "info", "debug"),)
        assert changes.lines("c.toml") == [(logging.INFO, "reloaded c.toml: applied log_level 'info' -> 'debug'")]

    def test_other_settings_need_a_restart(self):
        """A changed endpoint is named as needing a restart, in a warning."""
        changes = config_changes(
            {"bind": "tcp://a:1", "node_grace": 2.0}, {"bind": "tcp://b:1", "node_grace": 5.0}, RELOADABLE
        )
        assert changes.applied == (Change("node_grace", 2.0, 5.0),)
        assert changes.needs_restart == (Change("bind", "tcp://a:1", "tcp://b:1"),)
        assert changes.lines("c.toml")[1] == (
            logging.WARNING, "reloaded c.toml: not applied, needs a restart: bind 'tcp://a:1' -> 'tcp://b:1'"
        )

    def test_a_setting_added_or_removed_counts(self):
        """A key only one side has is a change (None on the other)."""
        changes = config_changes({"pub": "tcp://a:2"}, {"socket_group": "ops"}, RELOADABLE)
        assert changes.needs_restart == (Change("pub", "tcp://a:2", None), Change("socket_group", None, "ops"))

    def test_long_values_are_cut_in_lines(self):
        """A long value (a list of apps) is cut so one line stays readable."""
        changes = config_changes({"apps": ()}, {"apps": tuple("x" * 20 for _ in range(20))}, RELOADABLE)
        (_, line), = changes.lines("a.toml")
        assert len(line) < 200 and line.endswith("...")

    @given(
        st.dictionaries(st.sampled_from("abcdef"), st.integers(0, 3)),
        st.dictionaries(st.sampled_from("abcdef"), st.integers(0, 3)),
        st.frozensets(st.sampled_from("abcdef")),
    )
    def test_every_difference_is_listed_once_on_its_side(self, old, new, reloadable):
        """Each differing key appears once: applied iff reloadable; equal keys never appear."""
        changes = config_changes(old, new, reloadable)
        differing = {k for k in old.keys() | new.keys() if old.get(k) != new.get(k)}
        applied = [c.key for c in changes.applied]
        restart = [c.key for c in changes.needs_restart]
        assert sorted(applied + restart) == sorted(differing)
        assert set(applied) <= reloadable and not set(restart) & reloadable


class TestDaemonSettings:
    def test_controller_values_name_every_setting_of_the_file(self):
        """Every controller config key is compared on reload, and only those."""
        values = controller_daemon.settings_values(ControllerSettings(), "info")
        assert set(values) == set(controller_daemon.SETTINGS)
        assert controller_daemon.RELOADABLE <= set(values)

    def test_agent_reloadable_settings_are_known(self):
        """The agent's reloadable settings are config keys."""
        assert agent_daemon.RELOADABLE <= set(agent_daemon.SETTINGS)

    def test_log_level_comes_from_the_file_unless_given(self, tmp_path):
        """log_level in the file is used; --log-level wins; a bad one is refused by name."""
        path = tmp_path / "c.toml"
        path.write_text('log_level = "debug"\n')
        assert controller_daemon.load({}, str(path))[1] == "debug"
        assert controller_daemon.load({"log_level": "error"}, str(path))[1] == "error"
        path.write_text('log_level = "loud"\n')
        with pytest.raises(ConfigError, match="log_level: must be one of debug, info, warning, error, got 'loud'"):
            controller_daemon.load({}, str(path))
