"""Where the HTTP API listens, and the rule that keeps it off the network unless protected.

``--http HOST:PORT`` binds a TCP listener on the controller's loop. Loopback is served in plain
HTTP (every request still needs a token); any other address needs TLS, because a bearer token
sent in clear over a network is a token given away, unless the operator says ``--insecure``.
"""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

from aiohttp import web

from gaffer.common.endpoints import is_loopback
from gaffer.common.errors import ConfigError
from gaffer.controller.http.address import HttpAddress

log = logging.getLogger("gaffer.controller.http")

SHUTDOWN_GRACE = 2.0
"""Seconds open requests (an SSE stream, a long drain) get to end when the controller stops."""


def tls_context(cert: Path | None, key: Path | None) -> ssl.SSLContext | None:
    """A server context from ``--tls-cert`` and ``--tls-key`` (both or neither)."""
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise ConfigError("--tls-cert and --tls-key go together: give both, or neither")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"--tls-cert {cert} / --tls-key {key}: cannot be loaded: {exc}") from None
    return context


def require_http_protection(address: HttpAddress, tls: bool, insecure: bool) -> None:
    """Refuse plain HTTP on a non-loopback address unless ``insecure``."""
    if tls or insecure or is_loopback(address.host):
        return
    raise ConfigError(
        f"--http {address.host}:{address.port} is not a loopback address: bearer tokens would "
        "cross the network in clear. Give --tls-cert and --tls-key, or --insecure to accept that."
    )


class HttpServer:
    """One aiohttp application served on one address; ``stop`` ends open streams too."""

    def __init__(self, app: web.Application, address: HttpAddress, tls: ssl.SSLContext | None) -> None:
        self._app = app
        self._address = address
        self._tls = tls
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> str:
        """Bind and serve; the URL it answers on (the real port when 0 was asked)."""
        runner = web.AppRunner(
            self._app, access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN_GRACE,
        )
        await runner.setup()
        site = web.TCPSite(runner, self._address.host, self._address.port, ssl_context=self._tls)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise ConfigError(
                f"--http {self._address.host}:{self._address.port}: cannot listen: {exc.strerror}"
            ) from None
        self._runner = runner
        port = runner.addresses[0][1] if runner.addresses else self._address.port
        self.url = HttpAddress(self._address.host, port).url(self._tls is not None)
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


async def serve_http(controller) -> HttpServer:
    """Start the HTTP API of ``controller`` (a started ``Controller``) as its settings say:
    refused on a non-loopback address without TLS unless ``insecure``."""
    from gaffer.controller.http.app import build_app
    from gaffer.controller.http.context import HttpContext

    settings = controller.settings
    address = settings.http_address
    tls = tls_context(settings.tls_cert, settings.tls_key)
    require_http_protection(address, tls is not None, settings.insecure)
    server = HttpServer(build_app(HttpContext(controller.ops, controller, controller.tokens)), address, tls)
    await server.start()
    return server
