"""The unit suite's guard (``conftest.py``, which raises an AssertionError naming what a test
tried) is on."""

from __future__ import annotations

import socket
import subprocess

import pytest
import zmq


def test_the_guard_refuses_a_process_and_a_socket() -> None:
    """The guard is on: starting a process or making a ZeroMQ socket fails here."""
    with pytest.raises(AssertionError, match="start a process"):
        subprocess.run(["true"])
    with pytest.raises(AssertionError, match="ZeroMQ"):
        zmq.Context.instance().socket(zmq.PUB)
    with pytest.raises(AssertionError, match="connect"):
        socket.create_connection(("127.0.0.1", 9))
