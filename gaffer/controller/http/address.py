"""Where the HTTP API listens: ``--http HOST:PORT`` or ``off`` (no aiohttp import here, so
settings can be checked by a controller that serves no HTTP)."""

from __future__ import annotations

from dataclasses import dataclass

from gaffer.common.errors import ConfigError
from gaffer.common.ports import MAX_PORT

OFF = "off"


@dataclass(frozen=True)
class HttpAddress:
    host: str
    port: int

    def url(self, tls: bool) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if tls else 'http'}://{host}:{self.port}"


def parse_http(text: object, what: str = "--http") -> HttpAddress | None:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6), or ``off`` (None); ConfigError naming ``what``."""
    if not isinstance(text, str) or not text or len(text) > 300:
        raise ConfigError(f"{what}: expected HOST:PORT or 'off', got {text!r}")
    if text == OFF:
        return None
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= MAX_PORT:
        raise ConfigError(f"{what}: expected HOST:PORT (a port 0..{MAX_PORT}) or 'off', got {text!r}")
    return HttpAddress(host, int(port))
