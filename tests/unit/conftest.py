"""Unit tests spawn no process and open no socket: they run on the fakes of ``gaffer.testing``.

The guard below makes that a rule the suite enforces rather than a habit: a unit test that
starts a process (``subprocess``, ``os.fork``, ``os.posix_spawn``), makes a ZeroMQ socket, or
binds or connects a network socket fails at once, naming what it tried. (An event loop's own
self-pipe is a socketpair, neither bound nor connected, so loops still work.) Tests that need
the real thing belong in ``tests/integration``.
"""

from __future__ import annotations

import os
import socket
import subprocess
from typing import Any, Iterator

import pytest
import zmq


class RealResourceUsed(AssertionError):
    """A unit test reached for a real process or socket."""


def _refuse(what: str) -> Any:
    def refused(*args: Any, **kwargs: Any) -> Any:
        raise RealResourceUsed(f"a unit test must not {what}: use gaffer.testing's fakes, or move it to tests/integration")

    return refused


@pytest.fixture(autouse=True)
def no_processes_or_sockets(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(subprocess.Popen, "_execute_child", _refuse("start a process"))
    monkeypatch.setattr(os, "fork", _refuse("fork"))
    monkeypatch.setattr(os, "posix_spawn", _refuse("spawn a process"))
    monkeypatch.setattr(os, "posix_spawnp", _refuse("spawn a process"))
    monkeypatch.setattr(socket.socket, "bind", _refuse("bind a socket"))
    monkeypatch.setattr(socket.socket, "connect", _refuse("connect a socket"))
    monkeypatch.setattr(socket.socket, "connect_ex", _refuse("connect a socket"))
    monkeypatch.setattr(zmq.Context, "socket", _refuse("make a ZeroMQ socket"))
    yield

