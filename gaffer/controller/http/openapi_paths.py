"""The paths of the OpenAPI document: every route, its parameters, body and responses.

One entry per route of every route module, the dashboard's, the event stream's and
``/metrics`` included (``tests/unit/test_openapi.py`` holds the two lists equal). Built with a
few helpers so that each operation reads as one line of what it is: its role, its body, its
answer and the problems it may answer.
"""

from __future__ import annotations

from typing import Any

from gaffer.controller.http.openapi_schemas import STATES, ref

JSON = "application/json"
SSE = "text/event-stream"

READ = ("400", "401", "403", "429")
"""Problems every route with a token may answer (bad query, no token, low role, throttled)."""
NAMED = (*READ, "404")
WRITE = (*NAMED, "409", "413", "503")


def problems(*codes: str) -> dict[str, Any]:
    """Responses for problem status ``codes`` (and ``default``, for any other)."""
    shared = {"401": "Unauthorized", "429": "Throttled"}
    out = {code: {"$ref": f"#/components/responses/{shared.get(code, 'Problem')}"} for code in codes}
    out["default"] = {"$ref": "#/components/responses/Problem"}
    return out


def ok(schema: str, description: str, status: str = "200", headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description, "content": {JSON: {"schema": ref(schema)}}}
    if headers:
        response["headers"] = headers
    return {status: response}


def param(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/parameters/{name}"}


def query(name: str, description: str, schema: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"name": name, "in": "query", "description": description, "schema": schema, **extra}


def body(schema: str, required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {JSON: {"schema": ref(schema)}}}


def op(op_id: str, summary: str, tag: str, role: str, responses: dict[str, Any], *,
       params: tuple[Any, ...] = (), request: dict[str, Any] | None = None, public: bool = False) -> dict[str, Any]:
    """One operation; ``role`` is its least role (``public``: no token at all)."""
    out: dict[str, Any] = {"operationId": op_id, "summary": summary, "tags": [tag], "x-gaffer-role": role,
                           "responses": responses}
    if params:
        out["parameters"] = list(params)
    if request is not None:
        out["requestBody"] = request
    if public:
        out["security"] = []
    return out


ETAG = {"ETag": {"description": "The template's entity tag, for If-Match.", "schema": {"type": "string"},
                 "required": True}}
PAGE = (param("Limit"), param("Continue"))
LINES = query("lines", "How many recent lines (0..100000, default 100).", {"type": "integer", "minimum": 0})
FLAG = {"type": "string", "enum": ["0", "1", "true", "false"]}
FOLLOW = query("follow", "1: keep the stream open and send new lines as Server-Sent Events.", FLAG)
STREAM_NAME = query("stream", "Only this stream (default both).", {"enum": ["out", "err"]})
SINCE = query("since", "Resume after this event position.", {"type": "integer", "minimum": 0})
LAST_EVENT_ID = {"name": "Last-Event-ID", "in": "header", "schema": {"type": "string"},
                 "description": "The last position seen (an EventSource sends it on reconnect)."}
STREAM = {"description": "Server-Sent Events: data: <json> per event, id: its position; : keepalive every 15 s.",
          "content": {SSE: {"schema": {"type": "string"}}}}
LOGS = {
    "description": "The recent lines (JSON), or with follow=1 the lines as Server-Sent Events "
                   "(event: skipped marks lines lost to a slow reader).",
    "content": {JSON: {"schema": {"type": "array", "items": ref("LogLine")}}, SSE: {"schema": {"type": "string"}}},
}
TEXT = {"schema": {"type": "string"}}
NOT_MODIFIED = {"description": "Not modified: the If-None-Match tag is current."}


def _template_action(verb: str, result: str, summary: str) -> dict[str, Any]:
    return {"post": op(f"{verb}Template", summary, "templates", "operator",
                       {**ok(result, summary, headers=ETAG), **problems(*NAMED, "503")},
                       params=(param("TemplateName"),))}


NODE_PATHS: dict[str, Any] = {
    "/v1/status": {"get": op("getStatus", "The controller's status.", "status", "viewer",
                             {**ok("Status", "The status."), **problems(*READ)})},
    "/v1/nodes": {"get": op("listNodes", "The nodes, by name.", "nodes", "viewer",
                            {**ok("NodeList", "A page of nodes."), **problems(*READ)}, params=PAGE)},
    "/v1/nodes/{name}": {
        "parameters": [param("NodeName")],
        "get": op("getNode", "One node.", "nodes", "viewer", {**ok("Node", "The node."), **problems(*NAMED)}),
        "delete": op("forgetNode", "Forget a node that is down for good (gafferctl node forget); its "
                     "instances are placed elsewhere at once. 409 node_alive while it is up or suspect.",
                     "nodes", "admin", {**ok("Forgotten", "Forgotten."), **problems(*WRITE)}),
    },
    "/v1/nodes/{name}/cordon": {"post": op(
        "cordonNode", "Place nothing new on the node; what it runs stays.", "nodes", "admin",
        {**ok("Cordoned", "Cordoned."), **problems(*WRITE)}, params=(param("NodeName"),))},
    "/v1/nodes/{name}/uncordon": {"post": op(
        "uncordonNode", "Place on the node again (ends a drain too).", "nodes", "admin",
        {**ok("Cordoned", "Uncordoned."), **problems(*WRITE)}, params=(param("NodeName"),))},
    "/v1/nodes/{name}/drain": {"post": op(
        "drainNode", "Cordon the node and move its instances away, waiting up to wait seconds.", "nodes", "admin",
        {**ok("Drained", "Whether the node runs nothing now, and what is stuck."), **problems(*WRITE)},
        params=(param("NodeName"),), request=body("Drain", required=False))},
}

TEMPLATE_PATHS: dict[str, Any] = {
    "/v1/templates": {"get": op("listTemplates", "The templates, by name.", "templates", "viewer",
                                {**ok("TemplateList", "A page of templates."), **problems(*READ)}, params=PAGE)},
    "/v1/templates/{name}": {
        "parameters": [param("TemplateName")],
        "get": op("getTemplate", "One template: its spec and how it runs.", "templates", "viewer",
                  {**ok("Template", "The template.", headers=ETAG), **problems(*NAMED)}),
        "put": op("putTemplate", "Create or replace the template (as gafferctl apply does).", "templates", "admin",
                  {**ok("Change", "Replaced (or unchanged).", headers=ETAG),
                   **ok("Change", "Created.", "201", headers=ETAG), **problems(*WRITE, "412", "422")},
                  params=(param("IfMatch"), param("IfNoneMatch")), request=body("TemplateSpec")),
        "delete": op("deleteTemplate", "Delete the template; its instances stop.", "templates", "admin",
                     {**ok("Deleted", "Deleted."), **problems(*WRITE, "412")}, params=(param("IfMatch"),)),
    },
    "/v1/templates/{name}/scale": {"post": op(
        "scaleTemplate", "Set the count: 4, or a change: \"+2\", \"-1\".", "templates", "operator",
        {**ok("Scaled", "The new count.", headers=ETAG), **problems(*WRITE, "412")},
        params=(param("TemplateName"), param("IfMatch")), request=body("Scale"))},
    "/v1/templates/{name}/start": _template_action("start", "Paused", "Resume the template's instances."),
    "/v1/templates/{name}/stop": _template_action("stop", "Paused", "Stop the template's instances, keep it."),
    "/v1/templates/{name}/restart": _template_action("restart", "Restarting", "Restart its instances, rolling."),
    "/v1/templates/{name}/logs": {"get": op(
        "templateLogs", "Recent output of every instance of the template, merged in time order.", "templates",
        "viewer", {"200": LOGS, **problems(*NAMED)}, params=(param("TemplateName"), LINES, STREAM_NAME, FOLLOW, SINCE, LAST_EVENT_ID))},
    "/v1/apply": {"post": op(
        "apply", "Apply a template file (all of it or nothing), as gafferctl apply does.", "templates", "admin",
        {**ok("Applied", "What happened to each template."), **problems(*WRITE, "415", "422")},
        request={"required": True, "content": {
            "application/toml": TEXT, "application/json": {"schema": {}}, "text/plain": TEXT, "text/x-procfile": TEXT,
        }})},
}

INSTANCE_PATHS: dict[str, Any] = {
    "/v1/instances": {"get": op(
        "listInstances", "The instances (rows as gafferctl ps), by template, ordinal and node.", "instances",
        "viewer", {**ok("InstanceList", "A page of instances."), **problems(*NAMED)},
        params=(query("template", "Only this template's.", {"type": "string"}),
                query("node", "Only those on this node.", {"type": "string"}),
                query("state", "Only those in this state.", {"enum": STATES}),
                query("fresh", "1: ask the agents for cpu and memory now.", {"enum": ["0", "1", "true", "false"]}),
                *PAGE))},
    "/v1/instances/{id}": {"get": op(
        "getInstance", "One instance.", "instances", "viewer",
        {**ok("Instance", "The instance."), **problems(*NAMED)}, params=(param("InstanceId"),))},
    "/v1/instances/{id}/stats": {"get": op(
        "instanceStats", "The instance's cpu and memory, asked of its agent now.", "instances", "viewer",
        {**ok("InstanceStats", "The sample."), **problems(*NAMED, "503")}, params=(param("InstanceId"),))},
    "/v1/instances/{id}/signal": {"post": op(
        "signalInstance", "Send the instance's process a signal.", "instances", "operator",
        {**ok("Signalled", "The pids signalled."), **problems(*WRITE)},
        params=(param("InstanceId"),), request=body("Signal", required=False))},
    "/v1/instances/{id}/stdin": {"post": op(
        "writeStdin", "Write to the instance's stdin (its template needs redirect_input).", "instances",
        "operator", {**ok("Written", "Bytes written."), **problems(*WRITE)},
        params=(param("InstanceId"),), request=body("Stdin"))},
    "/v1/instances/{id}/logs": {"get": op(
        "instanceLogs", "Recent output of the instance.", "instances", "viewer",
        {"200": LOGS, **problems(*NAMED)}, params=(param("InstanceId"), LINES, STREAM_NAME, FOLLOW, SINCE, LAST_EVENT_ID))},
    "/v1/runs": {"post": op(
        "run", "Start a one-off process of a template (unattended).", "runs", "operator",
        {**ok("RunStarted", "The run's id and node.", "201"), **problems(*WRITE, "422")}, request=body("Run"))},
}

OTHER_PATHS: dict[str, Any] = {
    "/v1/tokens": {
        "get": op("listTokens", "The named tokens (never their secrets).", "tokens", "admin",
                  {**ok("TokenList", "The tokens."), **problems(*READ)}),
        "post": op("createToken", "Create a named token; its secret is answered once.", "tokens", "admin",
                   {**ok("TokenCreated", "The token and its secret.", "201"), **problems(*WRITE)},
                   request=body("TokenCreate")),
    },
    "/v1/tokens/{name}": {"delete": op(
        "revokeToken", "Revoke a named token.", "tokens", "admin",
        {**ok("TokenRevoked", "Revoked."), **problems(*WRITE)}, params=(param("TokenName"),))},
    "/v1/events": {"get": op(
        "events", "The event stream as Server-Sent Events (resume with Last-Event-ID or since).", "events",
        "viewer", {"200": STREAM, **problems(*READ)},
        params=(query("prefix", "Topic prefixes (repeat for several).", {"type": "array", "items": {"type": "string"}},
                      style="form", explode=True),
                SINCE, query("snapshot", "1: start with a snapshot of the state (event: snapshot).", FLAG),
                query("stats", "1: add the stream's figures now and then (event: stats).", FLAG),
                LAST_EVENT_ID))},
    "/v1/session": {
        "get": op("whoami", "Who the bearer token speaks for, and its role.", "dashboard", "viewer",
                  {**ok("Principal", "The caller."), **problems(*READ)}),
        "post": op("session", "Trade the bearer token (a login token) for a session token (12 h), same role.",
                   "dashboard", "viewer", {**ok("Session", "The session token.", "201"), **problems(*READ)}),
    },
    "/v1/openapi.json": {"get": op(
        "openapi", "This document.", "status", "public",
        {"200": {"description": "The OpenAPI document.", "content": {JSON: {"schema": {"type": "object"}}}},
         **problems()},
        public=True)},
    "/": {"get": op("dashboard", "The dashboard page.", "dashboard", "public",
                    {"200": {"description": "The page.", "content": {"text/html": TEXT}}, "304": NOT_MODIFIED,
                     **problems()}, public=True)},
    "/static/{file}": {"get": op(
        "static", "The dashboard's files (scripts, styles, images).", "dashboard", "public",
        {"200": {"description": "The file.", "content": {"*/*": {}}}, "304": NOT_MODIFIED, **problems("404")},
        params=({"name": "file", "in": "path", "required": True, "schema": {"type": "string"}},), public=True)},
    "/metrics": {"get": op(
        "metrics", "Prometheus metrics (text exposition format).", "metrics", "viewer",
        {"200": {"description": "The metrics.", "content": {"text/plain": TEXT}}, **problems(*READ)})},
}

PATHS: dict[str, Any] = {**NODE_PATHS, **TEMPLATE_PATHS, **INSTANCE_PATHS, **OTHER_PATHS}
