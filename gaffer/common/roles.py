"""Who may do what: three roles, and the least role each operation needs.

One table (``OP_ROLES``) decides for both interfaces, so they cannot disagree: a request on
the ZMQ socket (a CURVE client key's role, see ``keys.AuthorizedKeys``) and an HTTP request (a
bearer token's role, see ``controller/tokens.py``) are checked against the same entries.

    viewer      reads: status, listings, logs, events, waiting
    operator    also acts on processes: scale, start, stop, restart, kill, write, run
    admin       also changes what exists: apply and delete templates, manage nodes and tokens

Roles are ordered (``Role.ADMIN > Role.OPERATOR``), so "may" is one comparison. An operation
missing from the table needs admin (``required``): a new operation is closed until someone
decides who may call it, never open by omission.
"""

from __future__ import annotations

import enum
from types import MappingProxyType
from typing import Mapping

from gaffer.common.errors import InvalidArgument


class Role(enum.IntEnum):
    """Wire and CLI spelling: ``role.name.lower()`` (``viewer``, ``operator``, ``admin``)."""

    VIEWER = 1
    OPERATOR = 2
    ADMIN = 3

    @property
    def label(self) -> str:
        return self.name.lower()


ROLE_NAMES = tuple(role.label for role in Role)
"""``("viewer", "operator", "admin")``: for CLI choices and help text."""


def parse_role(text: object, field: str = "role") -> Role:
    """``"viewer"`` -> Role.VIEWER; InvalidArgument naming ``field`` for anything else."""
    if isinstance(text, str):
        for role in Role:
            if text == role.label:
                return role
    shown = repr(text) if isinstance(text, str) and len(text) <= 40 else f"a {type(text).__name__}"
    raise InvalidArgument(field, f"must be one of {', '.join(ROLE_NAMES)}, got {shown}")


_READS = (
    "ping", "status", "nodes", "templates", "get", "ps", "stats", "logs", "replay", "snapshot",
    "wait", "login",
)
_ACTS = ("scale", "start", "stop", "restart", "kill", "write", "run", "release")
_CHANGES = (
    "apply", "stage_apply", "delete", "cordon", "uncordon", "drain", "forget",
    "token_create", "token_list", "token_revoke",
)

OP_ROLES: Mapping[str, Role] = MappingProxyType({
    **{op: Role.VIEWER for op in _READS},
    **{op: Role.OPERATOR for op in _ACTS},
    **{op: Role.ADMIN for op in _CHANGES},
})
"""Every client operation (``Api.ops()``, the event ops, the token ops) -> the least role."""


def required(op: str) -> Role:
    """The least role that may call ``op``; admin for an operation not in the table."""
    return OP_ROLES.get(op, Role.ADMIN)


def may(role: Role, op: str) -> bool:
    """Whether ``role`` may call ``op``."""
    return role >= required(op)
