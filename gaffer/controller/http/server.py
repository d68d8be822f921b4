"""Where the HTTP API listens, and the rule that keeps it off the network unless protected.

``--http HOST:PORT`` binds a TCP listener on the controller's loop. Loopback is served in plain
HTTP (every request still needs a token); any other address needs TLS, because a bearer token
sent in clear over a network is a token given away, unless the operator says ``--insecure``.

The listener is bound at start (the port is taken, the URL known and printed), but aiohttp and
the application (about 11 MB of an idle ``gaffer start``'s memory with their imports, route
modules and prometheus_client) are loaded only when the first connection arrives: most runs of
``gaffer start`` never see a browser. Connections that arrive while the application is being
built are held paused (``_Held``) and handed to it, in order, once it is ready.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Union

if TYPE_CHECKING:
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


Builder = Callable[[], "web.Application"]


class _Held(asyncio.Protocol):
    """A connection accepted before the application was built: handed to ``arrived``, which
    holds it paused until the application is ready (or hands it over at once if it is)."""

    def __init__(self, arrived: Callable[[asyncio.BaseTransport], None]) -> None:
        self._arrived = arrived

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._arrived(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        pass  # a closed transport is skipped when the held ones are handed over


class HttpServer:
    """One aiohttp application served on one address; ``stop`` ends open streams too."""

    def __init__(self, app: Union["web.Application", Builder], address: HttpAddress, tls: ssl.SSLContext | None) -> None:
        """``app``: the application, or what builds it at the first connection."""
        self._build: Builder = (lambda: app) if hasattr(app, "router") else app  # type: ignore[assignment,return-value]
        self._address = address
        self._tls = tls
        self._listener: asyncio.AbstractServer | None = None
        self._runner: web.AppRunner | None = None
        self._held: list[asyncio.BaseTransport] = []
        self._loading: asyncio.Task | None = None
        self.url = ""

    @property
    def loaded(self) -> bool:
        """Whether aiohttp and the application are loaded (a connection arrived)."""
        return self._runner is not None

    async def start(self) -> str:
        """Bind; the URL it answers on (the real port when 0 was asked)."""
        try:
            self._listener = await asyncio.get_running_loop().create_server(
                self._protocol, self._address.host, self._address.port, ssl=self._tls,
            )
        except OSError as exc:
            raise ConfigError(
                f"--http {self._address.host}:{self._address.port}: cannot listen: {exc.strerror}"
            ) from None
        sockets = self._listener.sockets
        port = sockets[0].getsockname()[1] if sockets else self._address.port
        self.url = HttpAddress(self._address.host, port).url(self._tls is not None)
        return self.url

    def _protocol(self) -> asyncio.BaseProtocol:
        runner = self._runner
        if runner is not None and runner.server is not None:
            return runner.server()
        if self._loading is None:
            self._loading = asyncio.get_running_loop().create_task(self._load())
        return _Held(self._arrived)

    def _arrived(self, transport: asyncio.BaseTransport) -> None:
        if self._runner is not None:
            self._hand_over(transport)
            return
        transport.pause_reading()  # type: ignore[attr-defined]
        self._held.append(transport)

    def _hand_over(self, transport: asyncio.BaseTransport) -> None:
        assert self._runner is not None and self._runner.server is not None
        if transport.is_closing():
            return
        protocol = self._runner.server()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        transport.resume_reading()  # type: ignore[attr-defined]

    async def _load(self) -> None:
        """Import aiohttp, build and set up the application, hand it the held connections
        (if that fails, they are closed and the next connection tries again)."""
        try:
            from aiohttp import web

            runner = web.AppRunner(
                self._build(), access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN_GRACE,
            )
            await runner.setup()
        except Exception:
            log.exception("the HTTP application could not be loaded")
            for transport in self._held:
                transport.close()
            self._held, self._loading = [], None
            return
        self._runner = runner
        held, self._held = self._held, []
        for transport in held:
            self._hand_over(transport)

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._loading is not None:
            if not self._loading.done():
                self._loading.cancel()
            await asyncio.gather(self._loading, return_exceptions=True)
            self._loading = None
        for transport in self._held:
            transport.close()
        self._held = []
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


async def serve_http(controller) -> HttpServer:
    """Start the HTTP API of ``controller`` (a started ``Controller``) as its settings say:
    refused on a non-loopback address without TLS unless ``insecure``."""
    settings = controller.settings
    address = settings.http_address
    tls = tls_context(settings.tls_cert, settings.tls_key)
    require_http_protection(address, tls is not None, settings.insecure)
    def build() -> web.Application:
        from gaffer.controller.http.app import build_app
        from gaffer.controller.http.context import HttpContext

        return build_app(HttpContext(controller.ops, controller, controller.tokens))

    server = HttpServer(build, address, tls)
    await server.start()
    return server
