"""Endpoints: what parses, where the default sockets live, and the protection rule."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gaffer.common.endpoints import (
    Endpoint,
    events_for,
    parse_endpoint,
    private_dir,
    require_protection,
    runtime_dir,
)
from gaffer.common.errors import ConfigError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("tcp://127.0.0.1:6001", Endpoint("tcp", "127.0.0.1", 6001)),
        ("tcp://*:*", Endpoint("tcp", "*", 0)),
        ("tcp://[::1]:7000", Endpoint("tcp", "[::1]", 7000)),
        ("tcp://node-1.example.com:80", Endpoint("tcp", "node-1.example.com", 80)),
        ("127.0.0.1:6001", Endpoint("tcp", "127.0.0.1", 6001)),
        ("ipc:///run/gaffer/control.sock", Endpoint("ipc", path=Path("/run/gaffer/control.sock"))),
    ],
)
def test_parse_endpoint_accepts(text, expected):
    """tcp://HOST:PORT, HOST:PORT and ipc://PATH parse to the same endpoint they print as."""
    parsed = parse_endpoint(text)
    assert parsed == expected
    assert parse_endpoint(str(parsed)) == parsed


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("garbage", "is not an endpoint"),
        ("tcp://host", "is not an endpoint"),
        ("tcp://host:0", "port must be 1..65535"),
        ("tcp://host:70000", "port must be 1..65535"),
        ("tcp://[1:2:3]:1", "is not an IPv6 address"),
        ("udp://host:1", "only tcp:// and ipc://"),
        ("ipc://", "needs a socket path"),
        ("ipc:///" + "x" * 120, "longer than 107 bytes"),
        ("", "expected tcp://HOST:PORT or ipc://PATH"),
    ],
)
def test_parse_endpoint_refuses_with_one_line(text, message):
    """A bad endpoint is one ConfigError naming the option and the problem."""
    with pytest.raises(ConfigError, match=message) as caught:
        parse_endpoint(text, "--controller")
    assert caught.value.message.startswith("--controller") and "\n" not in caught.value.message


@given(st.text(max_size=60))
def test_parse_endpoint_never_raises_anything_else(text):
    """Whatever the text, the result is an endpoint or a ConfigError."""
    try:
        parse_endpoint(text)
    except ConfigError:
        pass


def test_events_beside_control():
    """events.sock beside control.sock, NAME.events beside any other socket, the next port."""
    assert events_for(parse_endpoint("ipc:///r/control.sock")) == parse_endpoint("ipc:///r/events.sock")
    assert events_for(parse_endpoint("ipc:///r/x")) == parse_endpoint("ipc:///r/x.events")
    assert events_for(parse_endpoint("tcp://h:6001")) == parse_endpoint("tcp://h:6002")
    assert events_for(parse_endpoint("tcp://h:*")).port == 0


def test_runtime_dir_rules():
    """GAFFER_RUNTIME_DIR, then /run/gaffer for root, XDG_RUNTIME_DIR, /tmp/gaffer-UID."""
    assert runtime_dir({"GAFFER_RUNTIME_DIR": "/x/y"}, uid=1000) == Path("/x/y")
    assert runtime_dir({}, uid=0) == Path("/run/gaffer")
    assert runtime_dir({"XDG_RUNTIME_DIR": "/"}, uid=1000) == Path("/gaffer")
    assert runtime_dir({"XDG_RUNTIME_DIR": "relative"}, uid=1000) == Path("/tmp/gaffer-1000")
    assert runtime_dir({}, uid=1000) == Path("/tmp/gaffer-1000")


def test_tcp_needs_keys_even_on_loopback():
    """TCP without keys is refused on every address; ipc never is; keys or insecure lift it."""
    local = parse_endpoint("ipc:///r/control.sock")
    for text in ("tcp://127.0.0.1:1", "tcp://[::1]:1", "tcp://localhost:1", "tcp://0.0.0.0:1"):
        with pytest.raises(ConfigError, match="--insecure"):
            require_protection([local, parse_endpoint(text)], have_keys=False, insecure=False, what="x")
        require_protection([parse_endpoint(text)], have_keys=True, insecure=False, what="x")
        require_protection([parse_endpoint(text)], have_keys=False, insecure=True, what="x")
    require_protection([local], have_keys=False, insecure=False, what="x")


def test_private_dir_is_created_0700_and_tightened(tmp_path):
    """A new runtime dir is 0700; an existing one of ours that is too open is tightened."""
    made = private_dir(tmp_path / "a" / "run")
    assert stat.S_IMODE(made.stat().st_mode) == 0o700
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o777)
    loose.chmod(0o777)
    private_dir(loose)
    assert stat.S_IMODE(loose.stat().st_mode) == 0o700


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a directory to another user")
def test_private_dir_refuses_a_directory_someone_else_owns(tmp_path):
    """A squatter's directory (e.g. a pre-made /tmp/gaffer-UID) is never used."""
    squat = tmp_path / "squat"
    squat.mkdir(mode=0o700)
    os.chown(squat, 65534, 65534)
    with pytest.raises(ConfigError, match="belongs to uid 65534"):
        private_dir(squat)


def test_private_dir_refuses_a_symlink(tmp_path):
    """A symlink in place of the runtime dir is refused, not followed."""
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(ConfigError, match="not a directory"):
        private_dir(tmp_path / "link")
