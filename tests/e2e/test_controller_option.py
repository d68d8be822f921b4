"""``--controller`` and ``Client(endpoint)`` as an operator types them (issue 9, item 1).

``HOST:PORT`` means ``tcp://HOST:PORT``; anything else is refused with one line naming the
value, never a ZeroMQ traceback.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from gaffer.client import Client
from gaffer.common.errors import ConfigError, ControllerUnreachable
from gaffer.testing import free_port

CTL = [sys.executable, "-m", "gaffer.cli.ctl"]


def gafferctl(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GAFFER_")}
    return subprocess.run([*CTL, *args], env=env, capture_output=True, text=True, timeout=30)


def test_host_port_without_scheme_is_taken_as_tcp():
    """--controller 127.0.0.1:PORT (nothing there) ends in one line naming tcp://127.0.0.1:PORT."""
    port = free_port()
    done = gafferctl("--controller", f"127.0.0.1:{port}", "--timeout", "0.5", "ps")
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and f"tcp://127.0.0.1:{port}" in lines[0]


@pytest.mark.parametrize("value, problem", [
    ("foo", "'foo' is not an endpoint"),
    ("tcp://", "'tcp://' is not an endpoint"),
    ("localhost:99999", "the port must be 1..65535"),
    ("http://x:1", "only tcp:// and ipc:// endpoints are supported"),
])
def test_a_bad_controller_value_is_refused_in_one_line(value, problem):
    """Each malformed --controller gives exit 1 and one line naming the option and the problem."""
    done = gafferctl("--controller", value, "ps")
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: controller: ")
    assert problem in lines[0] and repr(value) in lines[0]


def test_client_takes_host_port_as_tcp():
    """Client("localhost:1") talks tcp://localhost:1 and says nobody answered, no ZMQ error."""
    client = Client("localhost:1", timeout=0.5)
    try:
        assert client.endpoint == "tcp://localhost:1"
        with pytest.raises(ControllerUnreachable, match="no answer from the controller at tcp://localhost:1"):
            client.call("nodes")
    finally:
        client.close()


@pytest.mark.parametrize("value", ["foo", "tcp://", "localhost:99999", "http://x:1"])
def test_client_refuses_a_bad_endpoint_with_config_error(value):
    """Client(bad) raises ConfigError with one line naming "controller"."""
    with pytest.raises(ConfigError) as caught:
        Client(value)
    assert caught.value.message.startswith("controller: ") and "\n" not in caught.value.message
