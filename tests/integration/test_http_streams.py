"""The HTTP event and log streams (issue 11): Server-Sent Events from a real controller.

A real controller serves HTTP on a loopback port; agents run real processes; streams are read
by a real aiohttp client, message by message (``sseclient``).
"""

from __future__ import annotations

import aiohttp
import pytest

from gaffer.common.roles import Role
from gaffer.controller.http import sse, streams
from gaffer.testing import poll_until
from httpapi import LOOPBACK, Http
from inproc import Cluster, spec
from sseclient import eventually, open_stream



def is_event(message) -> bool:
    return message["id"] is not None and message["event"] is None


async def test_events_arrive_with_their_positions_as_ids(http: Http, cluster: Cluster):
    """Each event is one message whose id is its position, the same as in its data."""
    stream = await open_stream(http.session, http.url + "/v1/events?prefix=template.", http.token(Role.VIEWER))
    try:
        await cluster.call("apply", templates=[spec("web", 0)])
        await cluster.call("scale", name="web", count=2)
        got = await stream.events(2)
    finally:
        stream.close()
    assert [m["data"]["topic"] for m in got] == ["template.web.created", "template.web.scaled"]
    assert [int(m["id"]) for m in got] == [m["data"]["position"] for m in got]
    assert got[0]["data"]["position"] < got[1]["data"]["position"]
    assert got[1]["data"]["event"]["numprocesses"] == 2


async def test_a_reconnect_with_last_event_id_misses_nothing(http: Http, cluster: Cluster):
    """Events published while a client was away arrive on its reconnect with Last-Event-ID,
    exactly those, in order."""
    token = http.token(Role.VIEWER)
    url = http.url + "/v1/events?prefix=template.web."
    await cluster.call("apply", templates=[spec("web", 0)])
    first = await open_stream(http.session, url + "&since=0", token)
    try:
        seen = await first.events(1)
    finally:
        first.close()
    for count in (1, 2, 3):
        await cluster.call("scale", name="web", count=count)
    again = await open_stream(http.session, url, token, headers={"Last-Event-ID": seen[-1]["id"]})
    try:
        missed = await again.events(3)
    finally:
        again.close()
    expected = (await cluster.call("replay", since=int(seen[-1]["id"]), prefixes=["template.web."]))["events"]
    assert [int(m["id"]) for m in missed] == [e["seq"] for e in expected]
    assert [m["data"]["event"]["numprocesses"] for m in missed] == [1, 2, 3]


async def test_an_old_since_gets_lost_then_a_snapshot(cluster: Cluster):
    """A since older than the event buffer gets `event: lost` with the range, then the state
    as `event: snapshot`, then the events after the snapshot's position."""
    controller = await cluster.start_controller(http=LOOPBACK, event_buffer=10)
    http = Http(controller)
    try:
        await cluster.call("apply", templates=[spec("web", 0)])
        for count in range(1, 16):
            await cluster.call("scale", name="web", count=count % 3)
        horizon = controller.hub.log.horizon
        stream = await open_stream(http.session, http.url + "/v1/events?since=1", http.token(Role.VIEWER))
        try:
            lost = await stream.next()
            snapshot = await stream.next()
            await cluster.call("scale", name="web", count=5)
            after = await stream.until(is_event)
        finally:
            stream.close()
    finally:
        await http.close()
    assert lost["event"] == "lost" and lost["data"]["first"] == 2
    assert lost["data"]["last"] == horizon > 2
    assert snapshot["event"] == "snapshot" and int(snapshot["id"]) == snapshot["data"]["position"]
    assert [t["name"] for t in snapshot["data"]["templates"]] == ["web"]
    assert int(after["id"]) > snapshot["data"]["position"]


async def test_a_stream_that_stops_reading_does_not_slow_another(http: Http, cluster: Cluster, monkeypatch):
    """A client that stops reading is cut off (its bounded queue overflows) and its stream
    ended, while another stream gets every event in order and the hub never waits."""
    monkeypatch.setattr(streams, "STREAM_QUEUE", 20)
    monkeypatch.setattr(sse, "WRITE_STALL", 1.0)
    hub = http.controller.hub
    token = http.token(Role.VIEWER)
    stuck = await open_stream(http.session, http.url + "/v1/events?prefix=test.", token,
                              read_bufsize=2**12)
    reader = await open_stream(http.session, http.url + "/v1/events?prefix=test.", token)
    await poll_until(lambda: hub.bus.subscribers == 2, timeout=5)
    text = "x" * 256 * 1024
    positions = []
    try:
        for index in range(120):
            position = hub.publish("test.big", {"index": index, "text": text})
            positions.append(position)
            got = await reader.until(lambda m: m["id"] is not None, timeout=10)
            assert int(got["id"]) == position
        await poll_until(lambda: hub.bus.subscribers == 1, timeout=10)
        with pytest.raises((EOFError, aiohttp.ClientPayloadError)):
            await stuck.until(lambda m: False, timeout=15, limit=1_000)
    finally:
        stuck.close()
        reader.close()
    assert hub.status()["dropped_subscribers"] >= 1


async def test_keepalive_comments_keep_a_quiet_stream_open(http: Http, monkeypatch):
    """A stream with nothing to say sends `: keepalive` comments."""
    monkeypatch.setattr(streams, "KEEPALIVE", 0.2)
    stream = await open_stream(http.session, http.url + "/v1/events?prefix=nothing.", http.token(Role.VIEWER))
    try:
        got = await stream.next(timeout=10)
    finally:
        stream.close()
    assert got["comment"] == "keepalive" and got["data"] is None


async def test_a_snapshot_first_then_the_events_after_it(http: Http, cluster: Cluster):
    """?snapshot=1 starts with the state at a position, then the events after it."""
    await cluster.call("apply", templates=[spec("web", 0)])
    stream = await open_stream(http.session, http.url + "/v1/events?snapshot=1&prefix=template.", http.token(Role.VIEWER))
    try:
        first = await stream.next()
        await cluster.call("scale", name="web", count=1)
        event = await stream.until(is_event)
    finally:
        stream.close()
    assert first["event"] == "snapshot" and first["data"]["templates"][0]["numprocesses"] == 0
    assert event["data"]["topic"] == "template.web.scaled"
    assert int(event["id"]) > first["data"]["position"]


async def test_bad_stream_arguments_are_problems_naming_the_field(http: Http):
    """A bad since, Last-Event-ID, flag or too many prefixes is a 400 naming it."""
    token = http.token(Role.VIEWER)
    cases = [
        ("/v1/events?since=-1", {}, "since"),
        ("/v1/events?since=abc", {}, "since"),
        ("/v1/events", {"Last-Event-ID": "x1"}, "Last-Event-ID"),
        ("/v1/events?snapshot=yes", {}, "snapshot"),
        ("/v1/events?" + "&".join(f"prefix=p{i}" for i in range(65)), {}, "prefix"),
        ("/v1/instances/web.1/logs?lines=-3", {}, "lines"),
        ("/v1/instances/no%20such/logs", {}, "id"),
        ("/v1/templates/a.b/logs", {}, "name"),
    ]
    for path, headers, field in cases:
        answer = await http.request("GET", path, token, headers=headers)
        assert answer.status == 400, (path, answer.text)
        assert answer.body["field"] == field, (path, answer.body)


async def test_logs_follow_gets_recent_then_new_lines(http: Http, cluster: Cluster):
    """logs?follow=1 sends the recent lines, then each new line the process writes, once."""
    await cluster.start_agent("n1")
    echo = spec("echo", 1, cmd="sh", args=["-c", "while read l; do echo \"$l\"; done"], redirect_input=True)
    await cluster.call("apply", templates=[echo])
    await cluster.wait_running(1, "echo")
    await cluster.call("write", id="echo.1", data="before\n")

    async def logged() -> bool:
        return any(line["line"] == "before" for line in await cluster.call("logs", target="echo.1"))

    await eventually(logged, timeout=10)
    token = http.token(Role.VIEWER)
    listing = await http.request("GET", "/v1/instances/echo.1/logs?lines=5", token)
    assert listing.status == 200 and [row["line"] for row in listing.body] == ["before"]
    stream = await open_stream(http.session, http.url + "/v1/instances/echo.1/logs?follow=1&lines=5", token)
    try:
        recent = await stream.next()
        for word in ("one", "two"):
            await cluster.call("write", id="echo.1", data=word + "\n")
            live = await stream.until(lambda m: m["data"] and m["data"].get("line") == word, timeout=10)
            assert live["data"]["id"] == "echo.1" and live["id"] is not None
    finally:
        stream.close()
    assert recent["data"]["line"] == "before" and recent["data"]["number"] == 1
    lines = [m["data"]["line"] for m in stream.messages if m["data"] and "line" in m["data"]]
    assert lines == ["before", "one", "two"]
    await poll_until(lambda: not http.controller.hub.local_prefixes(), timeout=5)


async def test_a_session_token_speaks_for_the_same_principal(http: Http):
    """POST /v1/session trades a token for a session token of the same name and role, which
    GET /v1/session then names."""
    login = http.token(Role.OPERATOR, "alice")
    made = await http.request("POST", "/v1/session", login)
    assert made.status == 201 and made.body["role"] == "operator" and made.body["name"] == "alice"
    assert made.body["token"] != login
    who = await http.request("GET", "/v1/session", made.body["token"])
    assert who.status == 200 and who.body == {"name": "alice", "role": "operator"}
    refused = await http.request("POST", "/v1/session")
    assert refused.status == 401


async def test_the_dashboard_is_served_with_a_strict_policy(http: Http):
    """/ and /static files are public, with a CSP that allows no inline script, revalidated
    by ETag, without CORS headers; unknown files are 404."""
    page = await http.request("GET", "/")
    assert page.status == 200 and page.headers["Content-Type"].startswith("text/html")
    policy = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert "Access-Control-Allow-Origin" not in page.headers
    script = await http.request("GET", "/static/app.js")
    assert script.status == 200 and script.headers["Content-Type"].startswith("text/javascript")
    again = await http.request("GET", "/static/app.js", headers={"If-None-Match": script.headers["ETag"]})
    assert again.status == 304
    for path in ("/static/nothing.js", "/static/..%2Fsession.py", "/static/"):
        assert (await http.request("GET", path)).status == 404, path
