"""Which agents are alive on this host: each holds an abstract unix socket named after its id.

A starting agent settles the processes of its node whose agent is gone (``ownership``), so it
must tell a dead agent from a live one without any file: the state dir of the dead one may be
deleted, and a pid file can be stale. An abstract socket name (Linux) belongs to whoever has it
bound and vanishes with the last descriptor, so a killed or crashed agent frees it at once and
a live one, even stopped with SIGSTOP, keeps it. Nothing is ever sent on it.

Abstract names are per network namespace: agents in separate namespaces on one host (the
cluster tests) do not see each other, which is harmless as long as their node names differ.
"""

from __future__ import annotations

import errno
import socket
from typing import Iterable

from gaffer.common.errors import ConfigError

PREFIX = "gaffer-agent/"


def _address(agent_id: str) -> bytes:
    return b"\0" + (PREFIX + agent_id).encode()


class Presence:
    """Holds this agent's name for as long as it lives; ``close`` gives it up."""

    def __init__(self, agent_id: str) -> None:
        self.agent_id = agent_id
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        try:
            self._sock.bind(_address(agent_id))
        except OSError as exc:
            self._sock.close()
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(
                    f"another agent with id {agent_id} is running on this host (one state dir "
                    "serves one agent)"
                ) from None
            raise ConfigError(f"cannot announce agent {agent_id}: {exc.strerror}") from None

    def close(self) -> None:
        self._sock.close()


def alive(agent_id: str) -> bool:
    """Whether an agent with ``agent_id`` runs on this host now."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    try:
        probe.bind(_address(agent_id))
    except OSError as exc:
        return exc.errno == errno.EADDRINUSE
    finally:
        probe.close()
    return False


def live_agents(agent_ids: Iterable[str | None]) -> frozenset[str]:
    """Those of ``agent_ids`` that belong to a running agent."""
    return frozenset(a for a in set(agent_ids) if a and alive(a))
