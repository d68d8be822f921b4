"""The REST API (issue 11): nodes, templates, apply and ETags, over HTTP against a real
controller and agent. Every answer is also checked against the OpenAPI document (``Http``)."""

from __future__ import annotations

import asyncio
import json

import pytest

from gaffer.common.roles import Role
from httpapi import Http
from inproc import Cluster, spec



@pytest.fixture
async def http(http: Http, cluster: Cluster) -> Http:
    """The HTTP API with one agent, n1 (zone a)."""
    await cluster.start_agent("n1", {"zone": "a"})
    return http


async def put(http: Http, name: str, count: int = 1, headers: dict | None = None, **fields):
    body = {k: v for k, v in spec(name, count, **fields).items() if k != "name"}
    return await http.request("PUT", f"/v1/templates/{name}", http.token(), json=body, headers=headers or {})


async def test_nodes_are_listed_paged_and_read_one_by_one(http: Http):
    """GET /v1/nodes lists the agent's node (in pages with limit/continue); /v1/nodes/{name}
    reads one; an unknown node is 404, a bad name or limit a 400 naming the field."""
    token = http.token(Role.VIEWER)
    listed = await http.request("GET", "/v1/nodes", token)
    assert listed.status == 200 and [n["name"] for n in listed.body["items"]] == ["n1"]
    assert listed.body["continue"] is None
    paged = await http.request("GET", "/v1/nodes?limit=1", token)
    assert paged.status == 200 and len(paged.body["items"]) == 1
    one = await http.request("GET", "/v1/nodes/n1", token)
    assert one.status == 200 and one.body["labels"] == {"zone": "a"} and one.body["state"] == "up"
    missing = await http.request("GET", "/v1/nodes/n9", token)
    assert missing.status == 404 and missing.body["code"] == "node_not_found"
    bad = await http.request("GET", "/v1/nodes/no.dots", token)
    assert bad.status == 400 and bad.body["field"] == "name"
    for query in ("limit=abc", "limit=0", "limit=1&continue=%%%"):
        answer = await http.request("GET", f"/v1/nodes?{query}", token)
        assert answer.status == 400 and answer.body["field"] in ("limit", "continue"), query


async def test_cordon_uncordon_and_drain_a_node(http: Http):
    """cordon and uncordon flip the node's flag; drain answers whether the node emptied; a
    bad wait or an unknown body field is a 400 naming it; a viewer is refused."""
    token = http.token()
    cordoned = await http.request("POST", "/v1/nodes/n1/cordon", token)
    assert cordoned.status == 200 and cordoned.body == {"node": "n1", "cordoned": True}
    assert (await http.request("GET", "/v1/nodes/n1", token)).body["cordoned"] is True
    uncordoned = await http.request("POST", "/v1/nodes/n1/uncordon", token)
    assert uncordoned.body == {"node": "n1", "cordoned": False}
    drained = await http.request("POST", "/v1/nodes/n1/drain", token, json={"wait": 0})
    assert drained.status == 200 and drained.body["done"] is True and drained.body["node"] == "n1"
    bad = await http.request("POST", "/v1/nodes/n1/drain", token, json={"wait": "soon"})
    assert bad.status == 400 and bad.body["field"] == "wait"
    extra = await http.request("POST", "/v1/nodes/n1/drain", token, json={"wait": 0, "force": True})
    assert extra.status == 400 and extra.body["field"] == "force"
    viewer = await http.request("POST", "/v1/nodes/n1/cordon", http.token(Role.VIEWER))
    assert viewer.status == 403


async def test_delete_forgets_a_down_node_and_refuses_an_up_or_unknown_one(http: Http, cluster: Cluster):
    """DELETE /v1/nodes/{name} forgets a down node (admin only, as gafferctl node forget); an up
    node is 409 node_alive, an unknown one 404, a bad name 400 naming the field."""
    token = http.token()
    await cluster.start_agent("n2")
    await cluster.lose_agent("n2")
    await cluster.wait_node("n2", "down")
    alive = await http.request("DELETE", "/v1/nodes/n1", token)
    assert alive.status == 409 and alive.body["code"] == "node_alive"
    assert "only a node that is down can be forgotten" in alive.body["detail"]
    for role in (Role.VIEWER, Role.OPERATOR):
        refused = await http.request("DELETE", "/v1/nodes/n2", http.token(role))
        assert refused.status == 403 and refused.body["code"] == "forbidden"
    unknown = await http.request("DELETE", "/v1/nodes/n9", token)
    assert unknown.status == 404 and unknown.body["code"] == "node_not_found"
    bad = await http.request("DELETE", "/v1/nodes/no.dots", token)
    assert bad.status == 400 and bad.body["field"] == "name"
    forgotten = await http.request("DELETE", "/v1/nodes/n2", token)
    assert forgotten.status == 200 and forgotten.body == {"node": "n2", "forgotten": True, "moving": 0}
    assert (await http.request("GET", "/v1/nodes/n2", token)).status == 404
    assert [row["name"] for row in (await http.request("GET", "/v1/nodes", token)).body["items"]] == ["n1"]


async def test_status_shows_the_stats_cache(http: Http, cluster: Cluster):
    """GET /v1/status (and status over ZeroMQ) carries the stats cache's figures: instances
    with a pushed sample, their nodes, pushes received, the oldest sample's age."""
    token = http.token(Role.VIEWER)
    await cluster.start_agent("n2", stats_interval=0.1)
    assert (await put(http, "w", 1, placement={"nodes": ["n2"]})).status == 201
    await cluster.wait_running(1, "w")
    samples: dict = {}

    async def sampled() -> bool:
        nonlocal samples
        answer = await http.request("GET", "/v1/status", token)
        assert answer.status == 200
        samples = answer.body["samples"]
        return samples["instances"] == 1

    deadline = asyncio.get_running_loop().time() + 10.0
    while not await sampled():
        assert asyncio.get_running_loop().time() < deadline, samples
        await cluster.controller.changed(0.1)
    assert samples["nodes"] == 1 and samples["pushes"] >= 1 and 0 <= samples["oldest_age"] < 10
    assert (await cluster.call("status"))["samples"]["instances"] == 1


async def test_put_creates_then_replaces_a_template_and_get_reads_it(http: Http, cluster: Cluster):
    """PUT creates (201) and replaces (200) a template that then runs; GET answers it with
    the same ETag the PUT gave; the listing pages."""
    created = await put(http, "web", 1)
    assert created.status == 201 and created.body["change"] == "created"
    await cluster.wait_running(1, "web")
    got = await http.request("GET", "/v1/templates/web", http.token(Role.VIEWER))
    assert got.status == 200 and got.body["spec"]["cmd"] == "sleep"
    assert got.headers["ETag"] == created.headers["ETag"]
    same = await put(http, "web", 1)
    assert same.status == 200 and same.body["change"] == "unchanged" and same.headers["ETag"] == got.headers["ETag"]
    replaced = await put(http, "web", 2)
    assert replaced.body["change"] == "scaled" and replaced.headers["ETag"] != got.headers["ETag"]
    await put(http, "worker", 0)
    page = await http.request("GET", "/v1/templates?limit=1", http.token(Role.VIEWER))
    assert [t["name"] for t in page.body["items"]] == ["web"] and page.body["continue"]
    rest = await http.request("GET", f"/v1/templates?limit=1&continue={page.body['continue']}", http.token())
    assert [t["name"] for t in rest.body["items"]] == ["worker"] and rest.body["continue"] is None


async def test_a_bad_template_body_is_a_4xx_naming_the_field(http: Http):
    """An invalid template is 422 listing its problems; a mismatched name, a body that is
    not an object or not JSON are 400; an unknown template is 404; nothing is stored."""
    token = http.token()
    invalid = await http.request("PUT", "/v1/templates/web", token, json={"cmd": "sleep", "numprocesses": -1})
    assert invalid.status == 422 and invalid.body["code"] == "invalid_template"
    assert invalid.body["problems"][0]["field"] == "numprocesses"
    renamed = await http.request("PUT", "/v1/templates/web", token, json={"name": "other", "cmd": "sleep"})
    assert renamed.status == 400 and renamed.body["field"] == "name"
    listed = await http.request("PUT", "/v1/templates/web", token, json=["sleep"])
    assert listed.status == 400 and listed.body["field"] == "body"
    junk = await http.request("PUT", "/v1/templates/web", token, data=b"{not json",
                              headers={"Content-Type": "application/json"})
    assert junk.status == 400 and junk.body["code"] == "invalid_request"
    binary = await http.request("PUT", "/v1/templates/web", token, data=b"\xff\xfe\x00",
                                headers={"Content-Type": "application/json"})
    assert binary.status == 400
    missing = await http.request("GET", "/v1/templates/web", token)
    assert missing.status == 404 and missing.body["code"] == "template_not_found"


async def test_scale_start_stop_restart_and_delete(http: Http, cluster: Cluster):
    """scale takes a count or +N/-N and the cluster follows; stop, start and restart answer
    the new state with a new ETag; delete removes the template; a bad count is a 400."""
    await put(http, "web", 1)
    token = http.token(Role.OPERATOR)
    up = await http.request("POST", "/v1/templates/web/scale", token, json={"count": "+1"})
    assert up.status == 200 and up.body == {"name": "web", "numprocesses": 2, "previous": 1}
    await cluster.wait_running(2, "web")
    down = await http.request("POST", "/v1/templates/web/scale", token, json={"count": 1})
    assert down.body["numprocesses"] == 1
    for body, field in (({"count": "lots"}, None), ({}, "count"), ({"count": True}, "count"), ({"n": 2}, "n")):
        bad = await http.request("POST", "/v1/templates/web/scale", token, json=body)
        assert bad.status == 400, body
        assert field is None or bad.body["field"] == field
    stopped = await http.request("POST", "/v1/templates/web/stop", token)
    assert stopped.body == {"name": "web", "paused": True}
    started = await http.request("POST", "/v1/templates/web/start", token)
    assert started.body == {"name": "web", "paused": False} and started.headers["ETag"] != stopped.headers["ETag"]
    restarted = await http.request("POST", "/v1/templates/web/restart", token)
    assert restarted.body == {"name": "web", "restarting": True} and restarted.headers["ETag"] != started.headers["ETag"]
    refused = await http.request("DELETE", "/v1/templates/web", token)
    assert refused.status == 403
    deleted = await http.request("DELETE", "/v1/templates/web", http.token())
    assert deleted.status == 200 and deleted.body == {"name": "web", "deleted": True}
    gone = await http.request("POST", "/v1/templates/web/scale", token, json={"count": 1})
    assert gone.status == 404


async def test_two_clients_with_the_same_etag_cannot_both_write(http: Http):
    """Two clients read the same ETag; the first write with If-Match wins, the second (PUT,
    scale or DELETE) is refused with 412 precondition_failed and changes nothing."""
    await put(http, "web", 1)
    first = await http.request("GET", "/v1/templates/web", http.token())
    second = await http.request("GET", "/v1/templates/web", http.token())
    etag = first.headers["ETag"]
    assert second.headers["ETag"] == etag
    won = await put(http, "web", 1, headers={"If-Match": etag}, env={"EDIT": "first"})
    assert won.status == 200 and won.body["change"] == "updated"
    lost = await put(http, "web", 1, headers={"If-Match": etag}, env={"EDIT": "second"})
    assert lost.status == 412 and lost.body["code"] == "precondition_failed"
    kept = await http.request("GET", "/v1/templates/web", http.token())
    assert kept.body["spec"]["env"] == {"EDIT": "first"} and kept.headers["ETag"] == won.headers["ETag"]
    scale = await http.request("POST", "/v1/templates/web/scale", http.token(), json={"count": 3},
                               headers={"If-Match": etag})
    assert scale.status == 412
    delete = await http.request("DELETE", "/v1/templates/web", http.token(), headers={"If-Match": etag})
    assert delete.status == 412
    fresh = await http.request("DELETE", "/v1/templates/web", http.token(), headers={"If-Match": won.headers["ETag"]})
    assert fresh.status == 200


async def test_if_none_match_star_creates_only_and_bad_conditions_are_400(http: Http):
    """PUT with If-None-Match: * creates a template once and is 412 after; If-Match on a
    template that does not exist is 412; a malformed If-Match is a 400 naming the header."""
    created = await put(http, "web", 1, headers={"If-None-Match": "*"})
    assert created.status == 201
    again = await put(http, "web", 1, headers={"If-None-Match": "*"})
    assert again.status == 412
    absent = await put(http, "other", 1, headers={"If-Match": created.headers["ETag"]})
    assert absent.status == 412
    malformed = await put(http, "web", 1, headers={"If-Match": "no-quotes"})
    assert malformed.status == 400 and malformed.body["field"] == "If-Match"
    weak = await put(http, "web", 2, headers={"If-Match": "W/" + created.headers["ETag"]})
    assert weak.status == 412


TOML = """
[web]
cmd = "sleep"
args = ["300"]
startsecs = 0

[worker]
cmd = "sleep"
args = ["300"]
numprocesses = 0
"""


async def test_apply_reads_toml_json_and_procfile_bodies(http: Http, cluster: Cluster):
    """POST /v1/apply applies a TOML, a JSON and a Procfile body by Content-Type, answering
    each template's change; an unknown Content-Type is 415, a bad file a 4xx."""
    token = http.token()
    toml = await http.request("POST", "/v1/apply", token, data=TOML, headers={"Content-Type": "application/toml"})
    assert toml.status == 200 and toml.body["counts"] == {"created": 2}
    assert {r["name"]: r["change"] for r in toml.body["results"]} == {"web": "created", "worker": "created"}
    await cluster.wait_running(1, "web")
    body = json.dumps({"worker": {"cmd": "sleep", "args": ["300"], "numprocesses": 1}})
    as_json = await http.request("POST", "/v1/apply", token, data=body, headers={"Content-Type": "application/json"})
    assert as_json.body["results"] == [{"name": "worker", "change": "scaled", "version": 2}]
    procfile = await http.request("POST", "/v1/apply", token, data="clock: sleep 300\n",
                                  headers={"Content-Type": "text/x-procfile"})
    assert procfile.status == 200 and procfile.body["results"][0]["name"] == "clock"
    got = await http.request("GET", "/v1/templates/clock", token)
    assert got.body["spec"]["shell"] is True and got.body["spec"]["cmd"] == "sleep 300"
    xml = await http.request("POST", "/v1/apply", token, data="<web/>", headers={"Content-Type": "application/xml"})
    assert xml.status == 415 and xml.body["code"] == "unsupported_media_type"
    broken = await http.request("POST", "/v1/apply", token, data="[web\n", headers={"Content-Type": "application/toml"})
    assert broken.status == 400 and broken.body["code"] == "invalid_config"
    invalid = await http.request("POST", "/v1/apply", token, data='{"web": {"cmd": ""}}',
                                 headers={"Content-Type": "application/json"})
    assert invalid.status == 422 and invalid.body["problems"][0]["where"] == "web"
    empty = await http.request("POST", "/v1/apply", token, data="", headers={"Content-Type": "text/plain"})
    assert empty.status == 422
    operator = await http.request("POST", "/v1/apply", http.token(Role.OPERATOR), data=TOML,
                                  headers={"Content-Type": "application/toml"})
    assert operator.status == 403
