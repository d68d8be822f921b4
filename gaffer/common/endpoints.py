"""Where gaffer listens and connects, and the rule that keeps it from listening unprotected.

Two kinds of endpoint:

- ``ipc://PATH``: a unix socket. Protected by the filesystem, the way supervisor and Docker
  protect their control sockets: it lives in a private runtime directory (mode 0700, or 0750
  with an operator-chosen group), so only its owner (or that group) can even reach it. This is
  the default whenever there are no CURVE keys.
- ``tcp://HOST:PORT``: needs CURVE keys (authentication and encryption), on every address,
  loopback included: any local user can connect to 127.0.0.1, so loopback proves nothing about
  who is asking. Only ``--insecure`` lifts this, and then loudly.

The default runtime directory is ``$GAFFER_RUNTIME_DIR`` if set, else ``/run/gaffer`` for root,
else ``$XDG_RUNTIME_DIR/gaffer``, else ``/tmp/gaffer-<uid>``. A directory that already exists
must belong to this user and be closed to others: one made by someone else (a squatter in
/tmp) is refused, never used.
"""

from __future__ import annotations

import grp
import ipaddress
import os
import re
import socket
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from gaffer.common import pidlock
from gaffer.common.errors import ConfigError

DEFAULT_TCP_PORT = 6001
DEFAULT_KEYED_BIND = f"tcp://127.0.0.1:{DEFAULT_TCP_PORT}"
"""Where a controller with CURVE keys listens, and where clients with keys look for it."""
CONTROL_SOCKET = "control.sock"
EVENTS_SOCKET = "events.sock"
MAX_SOCKET_PATH = 107
"""sun_path holds 108 bytes including the terminating NUL."""

_TCP_RE = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][A-Za-z0-9.-]{0,252}|\*):(\d{1,5}|\*)$")


@dataclass(frozen=True)
class Endpoint:
    """One parsed endpoint: ``tcp`` with host and port (0: any free port), or ``ipc`` with a path."""

    scheme: str
    host: str = ""
    port: int = 0
    path: Path | None = None

    def __str__(self) -> str:
        if self.scheme == "ipc":
            return f"ipc://{self.path}"
        return f"tcp://{self.host}:{self.port or '*'}"

    @property
    def is_ipc(self) -> bool:
        return self.scheme == "ipc"

    @property
    def ipv6(self) -> bool:
        """A bracketed IPv6 host: the socket needs ZMQ's IPV6 option to bind or connect."""
        return self.host.startswith("[")

    @property
    def loopback(self) -> bool:
        return self.scheme == "tcp" and is_loopback(self.host)


def parse_endpoint(text: object, what: str = "endpoint") -> Endpoint:
    """``tcp://HOST:PORT``, ``HOST:PORT`` (taken as tcp) or ``ipc://PATH``; ConfigError naming
    ``what`` and the accepted forms for anything else."""
    if not isinstance(text, str) or not text or len(text) > 4096:
        raise ConfigError(f"{what}: expected tcp://HOST:PORT or ipc://PATH, got {_show(text)}")
    if text.startswith("ipc://"):
        raw = text[len("ipc://"):]
        if not raw or "\0" in raw:
            raise ConfigError(f"{what}: {_show(text)}: ipc:// needs a socket path")
        path = Path(os.path.abspath(raw))
        if len(os.fsencode(str(path))) > MAX_SOCKET_PATH:
            raise ConfigError(
                f"{what}: the socket path {path} is longer than {MAX_SOCKET_PATH} bytes, the "
                "limit of a unix socket address; choose a shorter path"
            )
        return Endpoint("ipc", path=path)
    address = text[len("tcp://"):] if text.startswith("tcp://") else text
    if "://" in address:
        raise ConfigError(f"{what}: {_show(text)}: only tcp:// and ipc:// endpoints are supported")
    match = _TCP_RE.match(address)
    if not match:
        raise ConfigError(f"{what}: {_show(text)} is not an endpoint: use tcp://HOST:PORT or ipc://PATH")
    host, port_text = match.groups()
    if host.startswith("["):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise ConfigError(f"{what}: {_show(text)}: {host} is not an IPv6 address") from None
    if port_text == "*":
        return Endpoint("tcp", host=host, port=0)
    port = int(port_text)
    if not 0 < port < 65536:
        raise ConfigError(f"{what}: {_show(text)}: the port must be 1..65535")
    return Endpoint("tcp", host=host, port=port)


def is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def events_for(control: Endpoint) -> Endpoint:
    """The events endpoint that goes with a control endpoint: ``events.sock`` beside
    ``control.sock`` (``NAME.events`` beside any other socket), or the next TCP port."""
    if control.is_ipc:
        assert control.path is not None
        name = EVENTS_SOCKET if control.path.name == CONTROL_SOCKET else control.path.name + ".events"
        return Endpoint("ipc", path=control.path.with_name(name))
    return Endpoint("tcp", host=control.host, port=control.port + 1 if control.port else 0)


PROTECTION_REMEDY = (
    "Leave --bind/--controller at their defaults (a private unix socket), make CURVE keys "
    "with `gafferctl keygen` (see the README, 'Security'), or pass --insecure to accept "
    "an open endpoint."
)


def require_protection(
    endpoints: list[Endpoint], have_keys: bool, insecure: bool, what: str, remedy: str = PROTECTION_REMEDY,
) -> None:
    """Refuse TCP without CURVE keys on any address, loopback included, unless ``insecure``.
    ``remedy`` names the ways out with the options ``what`` really has."""
    if have_keys or insecure:
        return
    exposed = [str(e) for e in endpoints if not e.is_ipc]
    if exposed:
        raise ConfigError(
            f"{what} would use {', '.join(exposed)} without encryption or authentication: any "
            "user who can reach it (on loopback, any local user) could run commands as gaffer. "
            + remedy
        )


INSECURE_WARNING = (
    "INSECURE: TCP without CURVE keys: anyone who can reach {endpoints} can run any command as "
    "this user (--insecure)"
)


# ----------------------------------------------------------------------------- runtime dir


def runtime_dir(env: Mapping[str, str] | None = None, uid: int | None = None) -> Path:
    """The directory of the default local sockets (see the module docstring)."""
    env = os.environ if env is None else env
    uid = os.geteuid() if uid is None else uid
    if env.get("GAFFER_RUNTIME_DIR"):
        return Path(os.path.abspath(env["GAFFER_RUNTIME_DIR"]))
    if uid == 0:
        return Path("/run/gaffer")
    xdg = env.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isabs(xdg) and os.path.isdir(xdg):
        return Path(xdg) / "gaffer"
    return Path(f"/tmp/gaffer-{uid}")


def default_control(env: Mapping[str, str] | None = None) -> Endpoint:
    return Endpoint("ipc", path=runtime_dir(env) / CONTROL_SOCKET)


def lookup_group(name: str | None) -> int | None:
    """The gid of group ``name`` (a name or a number), or ConfigError."""
    if name is None:
        return None
    if name.isdecimal():
        return int(name)
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        raise ConfigError(f"--socket-group: no group named {name!r} on this host") from None


def private_dir(path: Path, group: int | None = None) -> Path:
    """Create ``path`` (mode 0700, or 0750 owned by ``group``) or check an existing one.

    An existing directory must be a real directory (not a symlink) owned by this user: one
    someone else controls could hand our sockets to them, so it is refused with a message
    saying how to fix it. If its mode is wider than it should be (made by hand, or by an older
    gaffer), it is tightened.
    """
    mode = 0o750 if group is not None else 0o700
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.mkdir(path, mode)
        if group is not None:
            os.chown(path, -1, group)
        os.chmod(path, mode)
        return path
    except FileExistsError:
        pass
    except OSError as exc:
        raise ConfigError(f"cannot create the directory {path}: {exc.strerror}") from None
    try:
        info = os.lstat(path)
    except OSError as exc:
        raise ConfigError(f"cannot use the directory {path}: {exc.strerror}") from None
    if not stat.S_ISDIR(info.st_mode):
        raise ConfigError(f"{path} exists but is not a directory (a symlink or a file): remove it")
    if info.st_uid != os.geteuid():
        raise ConfigError(
            f"{path} belongs to uid {info.st_uid}, not to this user (uid {os.geteuid()}): "
            "refusing to put sockets where another user controls them; remove it or choose "
            "another directory (GAFFER_RUNTIME_DIR, --bind ipc://PATH)"
        )
    allowed = 0o750 if group is not None else 0o700
    if stat.S_IMODE(info.st_mode) & ~allowed or (group is not None and info.st_gid != group):
        if group is not None:
            os.chown(path, -1, group)
        os.chmod(path, mode)
    return path


def claim_socket(endpoint: Endpoint, group: int | None = None) -> int:
    """Prepare to bind ``endpoint`` (ipc): a private parent directory and an exclusive lock
    beside the socket, so a second daemon fails clearly instead of taking the socket over
    (binding an ipc path replaces whatever socket file is there). Returns the lock's fd."""
    assert endpoint.path is not None
    private_dir(endpoint.path.parent, group)
    lock = endpoint.path.with_name(endpoint.path.name + ".lock")
    try:
        return pidlock.hold(lock)
    except pidlock.LockHeld as held:
        raise ConfigError(
            f"{endpoint} is in use by {held.holder} (another gaffer?): stop it, or listen "
            "elsewhere with --bind ipc://PATH"
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot lock {lock}: {exc.strerror}") from None


def share_socket(endpoint: Endpoint, group: int | None) -> None:
    """After binding: let ``group`` connect (read/write on the socket file), nobody else."""
    if endpoint.is_ipc and group is not None:
        assert endpoint.path is not None
        os.chown(endpoint.path, -1, group)
        os.chmod(endpoint.path, 0o660)


def check_reachable(endpoint: Endpoint) -> None:
    """Before connecting to a local socket: a clear error when nothing listens there or this
    user may not use it, instead of a request that waits for its timeout."""
    if not endpoint.is_ipc:
        return
    assert endpoint.path is not None
    try:
        info = os.stat(endpoint.path)
    except PermissionError:
        raise ConfigError(
            f"permission denied: {endpoint.path} is in a directory this user cannot enter; run "
            "as the user gaffer runs as (or a member of its --socket-group)"
        ) from None
    except FileNotFoundError:
        raise ConfigError(
            f"no gaffer is listening at {endpoint} (no such socket): start `gaffer start` or "
            "`gaffer-controller`, or give --controller / GAFFER_CONTROLLER"
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot use {endpoint}: {exc.strerror}") from None
    if not stat.S_ISSOCK(info.st_mode):
        raise ConfigError(f"{endpoint.path} is not a socket")
    if not os.access(endpoint.path, os.R_OK | os.W_OK):
        raise ConfigError(
            f"permission denied: {endpoint.path} belongs to uid {info.st_uid}; run as that user "
            "(or a member of its --socket-group)"
        )
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(endpoint.path))
        except ConnectionRefusedError:
            raise ConfigError(
                f"no gaffer is listening at {endpoint} (a socket is left from one that stopped): "
                "start `gaffer start` or `gaffer-controller`, or give --controller / GAFFER_CONTROLLER"
            ) from None
        except OSError as exc:
            raise ConfigError(f"cannot use {endpoint}: {exc.strerror}") from None


def release_socket(endpoint: Endpoint, lock_fd: int) -> None:
    """After closing a socket bound with ``claim_socket``: remove its file, then the lock."""
    assert endpoint.path is not None
    try:
        if stat.S_ISSOCK(os.lstat(endpoint.path).st_mode):
            os.unlink(endpoint.path)
    except OSError:
        pass
    os.close(lock_fd)


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
