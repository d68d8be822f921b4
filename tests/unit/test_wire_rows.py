"""The agent's wire rows (``link.wire_instance``): an exited instance says how it exited, so
the controller can tell a job that completed for ``depends_on`` (issue 12)."""

from __future__ import annotations

import pytest

from gaffer.agent.link import WIRE_FIELDS, wire_instance


def info(state: str, last_exit: dict | None) -> dict:
    row = {key: None for key in WIRE_FIELDS}
    row.update({"id": "migrate.1", "template": "migrate", "ordinal": 1, "state": state, "restarts": 0,
                "ready": False, "last_exit": last_exit, "node": "n1", "uptime": None})
    return row


@pytest.mark.parametrize("state, last_exit, expected", [
    ("exited", {"status": 0, "signal": None}, 0),
    ("exited", {"status": 3, "signal": None}, 3),
    ("exited", {"status": None, "signal": "KILL"}, None),
    ("exited", None, None),
    ("backoff", {"status": 1, "signal": None}, None),
    ("running", {"status": 0, "signal": None}, None),
])
def test_only_an_exited_row_with_a_status_carries_exit_code(state, last_exit, expected):
    """exit_code is the status of an exited instance; absent otherwise (killed by a signal, a
    spawn that failed, or an instance that runs again)."""
    row = wire_instance(info(state, last_exit))
    assert row.get("exit_code") == expected
    assert set(row) - {"exit_code"} == set(WIRE_FIELDS)
