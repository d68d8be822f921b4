"""Controller settings: defaults, the config file, and the refusal to listen unprotected."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path

from gaffer.common.errors import ConfigError
from gaffer.controller.liveness import Liveness

ENDPOINT_RE = re.compile(r"^tcp://(\[[0-9A-Fa-f:.]+\]|[^:/\[\]]+):(\d{1,5}|\*)$")
DEFAULT_BIND = "tcp://127.0.0.1:6001"


@dataclass(frozen=True)
class ControllerSettings:
    bind: str = DEFAULT_BIND
    pub: str | None = None
    data_dir: Path = Path(".gaffer")
    keys: Path | None = None
    insecure: bool = False
    liveness: Liveness = field(default_factory=Liveness)
    node_grace: float = 2.0

    @property
    def pub_endpoint(self) -> str:
        """Events go to ``pub``, or to the port after ``bind``'s."""
        if self.pub:
            return self.pub
        host, port = split_endpoint(self.bind)
        return f"tcp://{host}:{port + 1 if port else '*'}"


def split_endpoint(endpoint: str) -> tuple[str, int]:
    """``tcp://HOST:PORT`` -> (HOST, PORT), PORT 0 for ``*`` (any free port); else ConfigError."""
    match = ENDPOINT_RE.match(endpoint)
    if not match:
        raise ConfigError(f"{endpoint!r} is not an endpoint: use tcp://HOST:PORT")
    if match.group(2) == "*":
        return match.group(1), 0
    port = int(match.group(2))
    if not 0 < port < 65536:
        raise ConfigError(f"{endpoint!r}: port must be 1..65535")
    return match.group(1), port


def is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def require_protection(endpoints: list[str], have_keys: bool, insecure: bool, what: str) -> None:
    """Refuse a non-loopback endpoint without CURVE keys unless ``insecure`` says so."""
    if have_keys or insecure:
        return
    exposed = [e for e in endpoints if not is_loopback(split_endpoint(e)[0])]
    if exposed:
        raise ConfigError(
            f"{what} would use {', '.join(exposed)} without encryption or authentication. "
            "Make CURVE keys with `gafferctl keygen` (see the README, 'Security') and pass "
            "them, or pass --insecure to accept an open, unauthenticated endpoint."
        )
