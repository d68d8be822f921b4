"""The dashboard's static files: ``/`` (``index.html``) and ``/static/{file}``.

No build step: the files in ``static/`` are what the browser gets, read once when the app is
built. They are public (no token: the page holds none until it reads its URL fragment), served
with a strict Content-Security-Policy (scripts and styles from this origin only, no inline
script, no framing, requests only to this origin), ``no-cache`` with an ETag (a browser
revalidates, so an upgraded controller serves the new page at once), and no CORS headers.
"""

from __future__ import annotations

import hashlib
from importlib import resources

from aiohttp import web

from gaffer.common.roles import Role
from gaffer.controller.http.context import Route

TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


def load_files() -> dict[str, tuple[bytes, str, str]]:
    """``name -> (body, content type, etag)`` for every file of ``static/`` (package data)."""
    out = {}
    for entry in resources.files("gaffer.controller.http").joinpath("static").iterdir():
        suffix = "." + entry.name.rpartition(".")[2]
        if entry.is_file() and suffix in TYPES:
            body = entry.read_bytes()
            out[entry.name] = (body, TYPES[suffix], '"' + hashlib.sha256(body).hexdigest()[:20] + '"')
    return out


def routes() -> list[Route]:
    files = load_files()

    def serve(name: str, request: web.Request) -> web.Response:
        found = files.get(name)
        if found is None:
            raise web.HTTPNotFound()
        body, kind, etag = found
        headers = {**HEADERS, "ETag": etag}
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers=headers)
        return web.Response(body=body, content_type=kind, charset="utf-8", headers=headers)

    async def index(request: web.Request) -> web.Response:
        return serve("index.html", request)

    async def static(request: web.Request) -> web.Response:
        return serve(request.match_info["file"], request)

    return [
        Route("GET", "/", index, Role.VIEWER, public=True),
        Route("GET", "/static/{file}", static, Role.VIEWER, public=True),
    ]
