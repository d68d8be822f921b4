"""The HTTP server's frame (issue 11): where it listens, who may ask, and how failures look.

A real controller serves HTTP on a loopback port chosen by the kernel; requests go through a
real aiohttp client.
"""

from __future__ import annotations

import asyncio
import ssl
import subprocess

import aiohttp
import pytest

from gaffer.common.errors import ConfigError
from gaffer.common.roles import Role
from gaffer.controller.http.app import build_app
from gaffer.controller.http.handlers import call, json_response
from gaffer.controller.http.context import HttpContext, Route
from gaffer.controller.http.address import HttpAddress
from gaffer.controller.http import server as http_server
from gaffer.controller.http.server import HttpServer
from httpapi import LOOPBACK, Http
from inproc import Cluster



async def test_a_request_without_a_token_is_refused_with_a_bearer_challenge(http: Http):
    """No token, on loopback too: 401 as a problem, with WWW-Authenticate: Bearer."""
    answer = await http.request("GET", "/v1/status")
    assert answer.status == 401
    assert answer.headers["Content-Type"].startswith("application/problem+json")
    assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    assert answer.body["code"] == "unauthorized" and answer.body["status"] == 401


async def test_an_unknown_or_malformed_token_is_refused(http: Http):
    """A token nobody issued, and junk in the header, are both 401 and never a 500."""
    for header in ("Bearer gaffer_" + "A" * 43, "Bearer x", "Basic abc", "Bearer " + "z" * 600, "Bearer"):
        answer = await http.request("GET", "/v1/status", headers={"Authorization": header})
        assert answer.status == 401, header
        assert answer.body["code"] == "unauthorized"


async def test_a_viewer_token_reads_the_status(http: Http):
    """A viewer's token is enough to read; the status names the HTTP address."""
    answer = await http.request("GET", "/v1/status", http.token(Role.VIEWER))
    assert answer.status == 200
    assert answer.body["http"] == http.url


async def test_unknown_paths_and_methods_are_problems(http: Http):
    """An unknown path is a 404 problem, a wrong method a 405 problem with Allow."""
    token = http.token()
    missing = await http.request("GET", "/v1/nothing-here", token)
    assert missing.status == 404 and missing.body["code"] == "not_found"
    wrong = await http.request("DELETE", "/v1/status", token)
    assert wrong.status == 405 and wrong.body["code"] == "method_not_allowed"
    assert "GET" in wrong.headers["Allow"]


class Probe:
    """Routes of this test only: one that needs an operator and calls an admin operation."""

    @staticmethod
    def routes() -> list[Route]:
        async def scale_like(request):
            return json_response(await call(request, "cordon", {"node": "nowhere"}))

        async def boom(request):
            raise RuntimeError("a bug")

        return [
            Route("POST", "/probe/operator", scale_like, Role.OPERATOR),
            Route("GET", "/probe/boom", boom, Role.VIEWER),
        ]


async def probe_server(cluster: Cluster) -> tuple[HttpServer, Http]:
    controller = cluster.controller
    app = build_app(HttpContext(controller.ops, controller, controller.tokens), [Probe])
    server = HttpServer(app, HttpAddress("127.0.0.1", 0), None)
    await server.start()
    client = Http(controller)
    client.url = server.url
    return server, client


async def test_roles_gate_routes_and_operations(cluster: Cluster):
    """A viewer is refused an operator's route (403); an operator passes the route but is
    refused an admin's operation inside it (403 naming the operation)."""
    await cluster.start_controller(http=LOOPBACK)
    server, client = await probe_server(cluster)
    try:
        viewer = await client.request("POST", "/probe/operator", client.token(Role.VIEWER))
        assert viewer.status == 403 and viewer.body["code"] == "forbidden"
        operator = await client.request("POST", "/probe/operator", client.token(Role.OPERATOR))
        assert operator.status == 403 and "cordon" in operator.body["detail"]
        admin = await client.request("POST", "/probe/operator", client.token(Role.ADMIN))
        assert admin.status == 404 and admin.body["code"] == "node_not_found"
    finally:
        await client.close()
        await server.stop()


async def test_a_bug_in_a_handler_is_a_500_problem_without_a_traceback(cluster: Cluster):
    """An unexpected exception answers 500 as a problem that names no internals."""
    await cluster.start_controller(http=LOOPBACK)
    server, client = await probe_server(cluster)
    try:
        answer = await client.request("GET", "/probe/boom", client.token())
        assert answer.status == 500 and answer.body["code"] == "error"
        assert "Traceback" not in answer.text and "a bug" not in answer.text
    finally:
        await client.close()
        await server.stop()


async def test_plain_http_off_loopback_is_refused_unless_insecure(cluster: Cluster):
    """--http on a non-loopback address without TLS does not start, naming the way out."""
    with pytest.raises(ConfigError, match="--tls-cert"):
        await cluster.start_controller(http="0.0.0.0:0")


async def test_tls_serves_https_with_the_given_certificate(cluster: Cluster, tmp_path):
    """With --tls-cert and --tls-key the API answers over HTTPS with that certificate."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    controller = await cluster.start_controller(http="0.0.0.0:0", tls_cert=cert, tls_key=key)
    assert controller.http is not None and controller.http.url.startswith("https://")
    port = controller.http.url.rsplit(":", 1)[1]
    context = ssl.create_default_context(cafile=str(cert))
    client = Http(controller)
    client.url = f"https://127.0.0.1:{port}"
    try:
        answer = await client.request("GET", "/v1/status", client.token(), ssl=context)
        assert answer.status == 200
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await client.request("GET", "/v1/status", client.token(), ssl=ssl.create_default_context())
    finally:
        await client.close()


async def test_a_taken_port_fails_the_start_unless_http_is_optional(cluster: Cluster, tmp_path):
    """An asked-for port that is taken refuses the start; gaffer start's default address
    (http_optional) goes on without HTTP instead."""
    first = await cluster.start_controller(http=LOOPBACK)
    taken = first.http.url.rsplit(":", 1)[1]
    other = Cluster(tmp_path / "other")
    try:
        with pytest.raises(ConfigError, match="cannot listen"):
            await other.start_controller(http=f"127.0.0.1:{taken}")
        controller = await other.start_controller(http=f"127.0.0.1:{taken}", http_optional=True)
        assert controller.http is None
        assert (await other.call("status"))["http"] is None
    finally:
        await other.close()


async def test_a_peer_sending_bad_tokens_is_slowed_down(http: Http):
    """Past a few bad tokens a peer gets 429 with Retry-After, even with a good token, until
    the delay passes; requests without any token do not count as failures."""
    for _ in range(10):
        assert (await http.request("GET", "/v1/status")).status == 401
    good = http.token()
    assert (await http.request("GET", "/v1/status", good)).status == 200
    answers = [await http.request("GET", "/v1/status", "gaffer_" + "B" * 43) for _ in range(7)]
    assert [a.status for a in answers[:6]] == [401] * 6
    assert answers[6].status == 429 and answers[6].body["code"] == "throttled"
    assert int(answers[6].headers["Retry-After"]) >= 1
    refused = await http.request("GET", "/v1/status", good)
    assert refused.status == 429


async def test_stopping_ends_open_event_streams_at_once(cluster: Cluster, monkeypatch):
    """An open event stream (a dashboard left open) is ended when the server stops, instead
    of holding the stop for aiohttp's shutdown timeout."""
    monkeypatch.setattr(http_server, "SHUTDOWN_GRACE", 120.0)
    await cluster.start_controller(http=LOOPBACK)
    controller = cluster.controller
    server = HttpServer(build_app(HttpContext(controller.ops, controller, controller.tokens)),
                        HttpAddress("127.0.0.1", 0), None)
    await server.start()
    client = Http(controller)
    headers = {"Authorization": f"Bearer {client.token(Role.VIEWER)}"}
    try:
        async with client.session.get(server.url + "/v1/events", headers=headers) as stream:
            assert stream.status == 200
            await asyncio.wait_for(server.stop(), 30)
            with pytest.raises(aiohttp.ClientPayloadError):  # cut off by the stop, not left hanging
                await asyncio.wait_for(stream.content.read(), 10)
    finally:
        await client.close()
        await server.stop()
