"""Who a ZMQ client request speaks for, and whether its role may call the operation.

The controller's sockets already decide who may connect: without keys, only the owner of the
private unix socket's directory (or, with ``--insecure``, anyone: the operator chose that);
with CURVE keys, only a key in ``clients/``, its name carried as the ZAP ``User-Id`` of every
message (``auth.py``). This module turns that into a ``Principal``:

    no keys (unix socket, or --insecure)    "local", admin
    a CURVE client key                      the key's name, its role from its key file
                                            (``AuthorizedKeys.role_of``: read again whenever
                                            the directory changes, so a role change or a
                                            removed key takes effect on the next request)

``refusal`` is the check ``Requests`` makes before an operation runs, against the same table
(``common/roles.py``) the HTTP side uses.
"""

from __future__ import annotations

from typing import Protocol

from gaffer.common.errors import Forbidden
from gaffer.common.roles import Role, required
from gaffer.controller.server import Session
from gaffer.controller.tokens import LOCAL, Principal


class ClientRoles(Protocol):
    def role_of(self, name: str) -> Role | None: ...


class SessionPrincipals:
    """``principal(session)`` for the controller's client sessions."""

    def __init__(self, clients: ClientRoles | None) -> None:
        """``clients``: the authorized client keys (None when the controller has no keys)."""
        self._clients = clients

    def principal(self, session: Session) -> Principal | None:
        """The principal of ``session``, or None for a key that is no longer authorized."""
        if self._clients is None or session.name is None:
            return LOCAL
        role = self._clients.role_of(session.name)
        return None if role is None else Principal(session.name, role)


def refusal(op: str, principal: Principal | None, who: str) -> Forbidden | None:
    """None when ``principal`` may call ``op``; else the Forbidden to answer. ``who``
    describes the caller for the message (``key 'alice'``)."""
    need = required(op)
    if principal is None:
        return Forbidden(op, need.label, f"{op!r} refused: {who} is no longer authorized")
    if principal.role >= need:
        return None
    return Forbidden(op, need.label, f"{op!r} needs the {need.label} role; {who} is a {principal.role.label}")
