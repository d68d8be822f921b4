"""Roles and the table of who may call which operation (no socket, no process)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gaffer.common.errors import Forbidden, InvalidArgument, from_wire
from gaffer.common.roles import OP_ROLES, ROLE_NAMES, Role, may, parse_role, required
from gaffer.controller.api import Api
from gaffer.controller.changes import Changes
from gaffer.controller.eventops import EventOps
from gaffer.controller.eventlog import EventLog
from gaffer.controller.oneoffs import OneOffs
from gaffer.controller.staging import Stages


def api_ops() -> set[str]:
    stub = SimpleNamespace(templates={})
    api = Api(stub, stub, OneOffs(), Stages(), Changes(), stub)  # type: ignore[arg-type]
    return set(api.ops()) | set(EventOps(EventLog(), api).ops())  # type: ignore[arg-type]


class TestRoleTable:
    def test_every_api_and_event_op_has_a_role(self):
        """Every operation the Api and the event ops serve is in OP_ROLES (none falls back)."""
        missing = api_ops() - set(OP_ROLES)
        assert not missing

    def test_the_contract_s_examples(self):
        """viewer reads, operator acts on processes, admin changes what exists and tokens."""
        for op in ("ping", "status", "nodes", "templates", "get", "ps", "stats", "logs", "replay", "snapshot", "wait", "login"):
            assert OP_ROLES[op] is Role.VIEWER, op
        for op in ("scale", "start", "stop", "restart", "kill", "write", "run", "release"):
            assert OP_ROLES[op] is Role.OPERATOR, op
        for op in ("apply", "stage_apply", "delete", "cordon", "uncordon", "drain", "forget",
                   "token_create", "token_list", "token_revoke"):
            assert OP_ROLES[op] is Role.ADMIN, op

    def test_an_op_not_in_the_table_needs_admin(self):
        """A new operation nobody classified is closed (admin), never open by omission."""
        assert required("brand_new_op") is Role.ADMIN
        assert not may(Role.OPERATOR, "brand_new_op")

    @given(st.sampled_from(list(Role)), st.sampled_from(sorted(OP_ROLES) + ["unknown"]))
    def test_a_higher_role_may_do_all_a_lower_one_may(self, role, op):
        """Roles are ordered: whatever a role may do, every role above it may do too."""
        if may(role, op):
            assert all(may(higher, op) for higher in Role if higher >= role)


class TestParseRole:
    @pytest.mark.parametrize("text, role", [("viewer", Role.VIEWER), ("operator", Role.OPERATOR), ("admin", Role.ADMIN)])
    def test_wire_spelling(self, text, role):
        """The wire and CLI spelling is the lower-case name, and it round-trips."""
        assert parse_role(text) is role and role.label == text

    @given(st.one_of(st.text(max_size=80), st.integers(), st.none(), st.binary(), st.lists(st.text())))
    def test_anything_else_is_refused_by_field(self, value):
        """Anything but the three spellings is InvalidArgument naming the field, never a crash."""
        if value in ROLE_NAMES:
            return
        with pytest.raises(InvalidArgument) as raised:
            parse_role(value, "metadata.role")
        assert raised.value.argument == "metadata.role"
        assert "viewer, operator, admin" in raised.value.message


def test_forbidden_names_the_op_and_role_and_survives_the_wire():
    """Forbidden carries the op and the role it needs, with code forbidden, across the wire."""
    error = from_wire(Forbidden("scale", "operator").to_dict())
    assert isinstance(error, Forbidden) and error.code == "forbidden"
    assert (error.op, error.role) == ("scale", "operator")
    assert "'scale' needs the operator role" in error.message
