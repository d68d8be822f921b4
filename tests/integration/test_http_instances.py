"""The REST API (issue 11): instances, one-off runs, and the check of every response against
the OpenAPI document, over HTTP against a real controller and agent."""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable

import pytest

from gaffer.common.roles import Role
from gaffer.controller.http.app import build_app
from gaffer.controller.http.context import HttpContext, Route
from gaffer.controller.http.address import HttpAddress
from gaffer.controller.http.handlers import json_response
from gaffer.controller.http.server import HttpServer
from httpapi import LOOPBACK, Http
from inproc import Cluster, spec
from openapi_check import DocumentBroken



async def until(http: Http, check: Callable[[], Awaitable[bool]], what: str, timeout: float = 10.0) -> None:
    """Wait until ``check()`` holds, woken by the controller's changes, at most ``timeout`` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        assert loop.time() < deadline, what
        await http.controller.changed(0.2)


@pytest.fixture
async def http(http: Http, cluster: Cluster) -> Http:
    """The HTTP API with one agent running web (2) and cat (1, stdin open)."""
    await cluster.start_agent("n1")
    await cluster.call("apply", templates=[spec("web", 2), spec("cat", 1, cmd="cat", args=[], redirect_input=True)])
    await cluster.wait_running(3)
    return http


async def test_instances_are_listed_filtered_and_paged(http: Http):
    """GET /v1/instances lists every instance, filters by template, node and state, and pages
    the filtered rows; a bad filter is a 400 naming it."""
    token = http.token(Role.VIEWER)
    every = await http.request("GET", "/v1/instances", token)
    assert [row["id"] for row in every.body["items"]] == ["cat.1", "web.1", "web.2"]
    web = await http.request("GET", "/v1/instances?template=web", token)
    assert [row["id"] for row in web.body["items"]] == ["web.1", "web.2"]
    on_node = await http.request("GET", "/v1/instances?node=n1&state=running&limit=2", token)
    assert [row["id"] for row in on_node.body["items"]] == ["cat.1", "web.1"]
    rest = await http.request("GET", f"/v1/instances?node=n1&state=running&limit=2&continue={on_node.body['continue']}",
                              token)
    assert [row["id"] for row in rest.body["items"]] == ["web.2"] and rest.body["continue"] is None
    elsewhere = await http.request("GET", "/v1/instances?node=n2", token)
    assert elsewhere.body == {"items": [], "continue": None}
    for query, field in (("state=asleep", "state"), ("node=a.b", "node"), ("template=a.b", "template"),
                         ("limit=x", "limit"), ("state=running&continue=abc", "continue")):
        bad = await http.request("GET", f"/v1/instances?{query}", token)
        assert bad.status == 400 and bad.body["field"] == field, query
    missing = await http.request("GET", "/v1/instances?template=nope", token)
    assert missing.status == 404


async def test_one_instance_and_its_live_stats(http: Http):
    """GET /v1/instances/{id} is its ps row, /stats its agent's sample now; an unknown id is
    404, a malformed one 400."""
    token = http.token(Role.VIEWER)
    one = await http.request("GET", "/v1/instances/web.1", token)
    assert one.status == 200 and one.body["state"] == "running" and one.body["node"] == "n1"
    stats = await http.request("GET", "/v1/instances/web.1/stats", token)
    assert stats.status == 200 and stats.body["pid"] == one.body["pid"] and stats.body["mem"] > 0
    for path in ("/v1/instances/web.9", "/v1/instances/nope.1", "/v1/instances/web.9/stats"):
        missing = await http.request("GET", path, token)
        assert missing.status == 404 and missing.body["code"] == "instance_not_found", path
    bad = await http.request("GET", "/v1/instances/web", token)
    assert bad.status == 400 and bad.body["field"] == "id"


async def test_signal_an_instance(http: Http, cluster: Cluster):
    """POST /signal sends the signal to the instance's process (here KILL: it is replaced);
    an unknown signal is a 400, a viewer is refused."""
    token = http.token(Role.OPERATOR)
    before = (await http.request("GET", "/v1/instances/web.1", token)).body["pid"]
    killed = await http.request("POST", "/v1/instances/web.1/signal", token, json={"signal": "KILL"})
    assert killed.status == 200 and killed.body["pids"] == {"n1": [before]}

    async def replaced() -> bool:
        row = (await http.request("GET", "/v1/instances/web.1", token)).body
        return row["pid"] not in (None, before) and row["state"] == "running"

    await until(http, replaced, "web.1 was not replaced")
    bad = await http.request("POST", "/v1/instances/web.1/signal", token, json={"signal": "NOPE"})
    assert bad.status == 400 and bad.body["code"] == "invalid_signal"
    viewer = await http.request("POST", "/v1/instances/web.1/signal", http.token(Role.VIEWER), json={})
    assert viewer.status == 403


async def test_write_to_an_instances_stdin(http: Http, cluster: Cluster):
    """POST /stdin writes to a process that reads stdin (its output shows it); a template
    without redirect_input is 400 stdin_not_enabled; data is required."""
    token = http.token(Role.OPERATOR)
    written = await http.request("POST", "/v1/instances/cat.1/stdin", token, json={"data": "hello\n"})
    assert written.status == 200 and written.body == {"id": "cat.1", "node": "n1", "bytes": 6}

    async def echoed() -> bool:
        lines = await cluster.call("logs", target="cat.1")
        return any(line["line"] == "hello" for line in lines)

    await until(http, echoed, "cat did not echo")
    refused = await http.request("POST", "/v1/instances/web.1/stdin", token, json={"data": "x"})
    assert refused.status == 400 and refused.body["code"] == "stdin_not_enabled"
    missing = await http.request("POST", "/v1/instances/cat.1/stdin", token, json={})
    assert missing.status == 400 and missing.body["field"] == "data"


async def test_a_one_off_run(http: Http, cluster: Cluster):
    """POST /v1/runs starts a one-off process of a template on a node (201, its id); an
    unknown template is 404, a missing name or bad args a 400 naming the field."""
    token = http.token(Role.OPERATOR)
    started = await http.request("POST", "/v1/runs", token, json={"name": "web", "args": ["1"]})
    assert started.status == 201 and started.body["id"].startswith("web.run-") and started.body["node"] == "n1"
    unknown = await http.request("POST", "/v1/runs", token, json={"name": "nope"})
    assert unknown.status == 404
    for body, field in (({}, "name"), ({"name": "web", "args": "x"}, "args"), ({"name": "web", "lease": 1}, "lease")):
        bad = await http.request("POST", "/v1/runs", token, json=body)
        assert bad.status == 400 and bad.body["field"] == field, body


async def test_a_run_that_cannot_start_is_a_4xx_not_a_500(http: Http, cluster: Cluster):
    """A one-off run whose command or directory does not exist on the node answers 422
    spawn_failed with the agent's reason, never a 500."""
    await cluster.call("apply", templates=[spec("nocmd", 0, cmd="/nonexistent/cmd", args=[]),
                                           spec("nodir", 0, cwd="/nonexistent")])
    token = http.token(Role.OPERATOR)
    for name, reason in (("nocmd", "not found"), ("nodir", "does not exist")):
        answer = await http.request("POST", "/v1/runs", token, json={"name": name})
        assert answer.status == 422 and answer.body["code"] == "spawn_failed", answer.body
        assert reason in answer.body["detail"]


class Broken:
    """A route at a documented path that answers what the document does not allow."""

    @staticmethod
    def routes() -> list[Route]:
        async def status(request):
            return json_response({"controller": 42})

        return [Route("GET", "/v1/status", status, Role.VIEWER)]


async def test_a_response_that_breaks_the_document_fails_the_test(cluster: Cluster):
    """The test client refuses a response that the OpenAPI document does not allow."""
    controller = await cluster.start_controller(http=LOOPBACK)
    app = build_app(HttpContext(controller.ops, controller, controller.tokens), [Broken])
    server = HttpServer(app, HttpAddress("127.0.0.1", 0), None)
    await server.start()
    client = Http(controller)
    client.url = server.url
    try:
        with pytest.raises(DocumentBroken, match="controller"):
            await client.request("GET", "/v1/status", client.token())
    finally:
        await client.close()
        await server.stop()
