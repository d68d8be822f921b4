"""One HTTP GET for a readiness check, on a bare asyncio protocol.

A check needs the status line and the first bytes of the body, nothing else: no redirects, no
cookies, no pooling, no decompression. A general client (aiohttp) pays for all of those on
every request, and at 1,000 instances checked every 5 s that was most of a check's cost
(bench/health.py). This sends one ``HTTP/1.1`` request with ``Connection: close``, reads until
the status line and ``MAX_OUTPUT`` body bytes are in (or the server closes), and closes. https
URLs go through the same protocol over TLS (the default context: the certificate is verified).
The caller bounds it in time (``Probes.run``'s timeout).
"""

from __future__ import annotations

import asyncio
import ssl
from typing import cast
from urllib.parse import urlsplit

from gaffer.common.healthspec import MAX_OUTPUT

MAX_HEAD = 16 * 1024
"""Response head bytes read before giving up on finding its end."""
_TLS: ssl.SSLContext | None = None


class HttpAnswer:
    __slots__ = ("status", "reason", "body")

    def __init__(self, status: int, reason: str, body: bytes) -> None:
        self.status = status
        self.reason = reason
        self.body = body


class BadResponse(Exception):
    """The server answered something that is not an HTTP/1.x response."""


class _GetProtocol(asyncio.Protocol):
    def __init__(self, request: bytes, done: asyncio.Future[bytes]) -> None:
        self._request = request
        self._done = done
        self._data = bytearray()
        self._transport: asyncio.Transport | None = None
        self._body_at = -1

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is no asyncio.Transport subclass
        self._transport.write(self._request)

    def data_received(self, data: bytes) -> None:
        self._data += data
        if self._body_at < 0:
            end = self._data.find(b"\r\n\r\n")
            if end >= 0:
                self._body_at = end + 4
            elif len(self._data) > MAX_HEAD:
                self._finish()
                return
        if self._body_at >= 0 and len(self._data) - self._body_at >= MAX_OUTPUT:
            self._finish()

    def eof_received(self) -> bool:
        self._finish()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._done.done():
            if exc is not None and not self._data:
                self._done.set_exception(exc)
            else:
                self._done.set_result(bytes(self._data))

    def _finish(self) -> None:
        if not self._done.done():
            self._done.set_result(bytes(self._data))
        if self._transport is not None:
            self._transport.close()


def _tls() -> ssl.SSLContext:
    global _TLS
    if _TLS is None:
        _TLS = ssl.create_default_context()
    return _TLS


def request_bytes(url: str) -> tuple[str, int, bool, bytes]:
    """(host, port, tls, request) for a GET of ``url``; ValueError for a URL it cannot use."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http:// or https:// URL: {url!r}")
    tls = parts.scheme == "https"
    port = parts.port or (443 if tls else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host = parts.netloc.rpartition("@")[2]
    head = (
        f"GET {target} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: gaffer-health\r\n"
        "Accept: */*\r\nConnection: close\r\n\r\n"
    )
    return parts.hostname, port, tls, head.encode("latin-1")


def parse_answer(raw: bytes) -> HttpAnswer:
    """The status, reason and first body bytes of a raw response; BadResponse otherwise."""
    line, _, rest = raw.partition(b"\r\n")
    version, _, tail = line.partition(b" ")
    code, _, reason = tail.partition(b" ")
    if not version.startswith(b"HTTP/1.") or len(code) != 3 or not code.isdigit():
        raise BadResponse(f"not an HTTP response: {line[:80]!r}")
    _, _, body = rest.partition(b"\r\n\r\n")
    return HttpAnswer(int(code), reason.decode("latin-1", "replace"), body[:MAX_OUTPUT])


async def get(url: str) -> HttpAnswer:
    """GET ``url`` once; OSError when it cannot connect, BadResponse for a non-HTTP answer."""
    host, port, tls, request = request_bytes(url)
    loop = asyncio.get_running_loop()
    done: asyncio.Future[bytes] = loop.create_future()
    transport, _ = await loop.create_connection(
        lambda: _GetProtocol(request, done), host, port,
        ssl=_tls() if tls else None, server_hostname=host if tls else None,
    )
    try:
        raw = await done
    finally:
        transport.close()
    return parse_answer(raw)
