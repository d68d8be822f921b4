"""The [health] table, notify and restart_on_unhealthy in templates (common/healthspec.py)."""

from __future__ import annotations

import pytest

from gaffer.common.errors import TemplateError
from gaffer.common.template import parse_template


def problems(**fields) -> list[str]:
    with pytest.raises(TemplateError) as caught:
        parse_template({"cmd": "serve", **fields}, name="web")
    return [f"{p.field}: {p.message}" for p in caught.value.problems]


class TestValid:
    @pytest.mark.parametrize("health", [
        {"type": "http", "url": "http://127.0.0.1:$PORT/healthz", "interval": 5, "timeout": 1},
        {"type": "tcp", "port": "$PORT"},
        {"type": "tcp", "host": "::1", "port": 8080, "start_period": 30, "failure_threshold": 10},
        {"type": "exec", "command": "pg_isready -q", "success_threshold": 2},
        {"type": "exec", "args": ["sh", "-c", "test -e /tmp/ok"]},
    ])
    def test_a_check_round_trips_through_its_plain_form(self, health):
        """Each kind of check parses, and to_dict gives it back equal (the store keeps that)."""
        t = parse_template({"cmd": "serve", "health": health, "notify": True, "restart_on_unhealthy": False}, name="web")
        assert t.health is not None and t.health.type == health["type"]
        assert parse_template(t.to_dict(), name="web") == t

    def test_defaults_follow_the_contract(self):
        """interval 10, timeout 2, start_period 0, thresholds 3 and 1; restart when unhealthy."""
        t = parse_template({"cmd": "x", "health": {"type": "tcp", "port": 1}}, name="web")
        h = t.health
        assert (h.interval, h.timeout, h.start_period, h.failure_threshold, h.success_threshold) == (10, 2, 0, 3, 1)
        assert t.restart_on_unhealthy and not t.notify

    def test_a_template_without_them_keeps_its_stored_form_and_hash(self):
        """No health, notify or restart_on_unhealthy in the plain form of a template without them."""
        t = parse_template({"cmd": "x"}, name="web")
        assert not {"health", "notify", "restart_on_unhealthy"} & set(t.to_dict())

    def test_notify_restarts_instances_a_check_does_not(self):
        """notify changes the environment (NOTIFY_SOCKET): part of the launch spec; a check is not."""
        base = parse_template({"cmd": "x"}, name="web")
        checked = parse_template({"cmd": "x", "health": {"type": "tcp", "port": 1}}, name="web")
        notify = parse_template({"cmd": "x", "notify": True}, name="web")
        assert checked.spec_hash() == base.spec_hash() != notify.spec_hash()


class TestRefused:
    def test_every_bad_setting_is_named_at_once(self):
        """One error lists each problem of the table, each naming its field."""
        found = problems(health={
            "type": "http", "url": "ftp://x", "interval": 0, "timeout": -1, "start_period": float("nan"),
            "failure_threshold": 0, "success_threshold": 1001, "command": "x", "bogus": 1,
        }, notify="yes", restart_on_unhealthy=3)
        fields = [line.split(":")[0] for line in found]
        assert fields == [
            "health.bogus", "health.command", "health.url", "health.interval", "health.timeout",
            "health.start_period", "health.failure_threshold", "health.success_threshold",
            "notify", "restart_on_unhealthy",
        ], found

    @pytest.mark.parametrize(("health", "expected"), [
        ({}, "health.type: must be one of exec, http, tcp, got nothing"),
        ({"type": "grpc"}, "health.type: must be one of exec, http, tcp, got string 'grpc'"),
        ({"type": "exec"}, "health.command: is required for an exec check"),
        ({"type": "exec", "command": "a", "args": ["b"]}, "health.args: give command or args, not both"),
        ({"type": "exec", "command": ""}, "health.command: must not be empty"),
        ({"type": "http"}, "health.url: is required for an http check"),
        ({"type": "tcp"}, "health.port: is required for a tcp check"),
        ({"type": "tcp", "port": 70000}, "health.port: is too large: at most 65,535, got 70000"),
        ({"type": "tcp", "port": "http"}, 'health.port: must be a port 1..65535 or a variable such as "$PORT", got string \'http\''),
        ({"type": "tcp", "port": 1, "interval": 1, "timeout": 2}, "health.timeout: must be <= interval (1), got 2"),
        ({"type": "tcp", "port": 1, "interval": 86401}, "health.interval: is too large: at most 86400, got 86401"),
        ({"type": "tcp", "port": 1, "failure_threshold": 2**70}, "health.failure_threshold: is too large"),
        ("http", "health: must be a table/object, got string 'http'"),
    ])
    def test_a_bad_check_gets_a_one_line_reason(self, health, expected):
        """Each mistake is named with its field and the rule it breaks."""
        found = problems(health=health)
        assert any(line.startswith(expected) for line in found), found

    def test_restart_on_unhealthy_needs_a_check(self):
        """restart_on_unhealthy without [health] would do nothing: refused, saying so."""
        assert problems(restart_on_unhealthy=False) == ["restart_on_unhealthy: has no effect without a [health] check"]
