"""The schemas of the OpenAPI document (``components/schemas``): every body the API reads or
answers, as JSON Schema 2020-12 (OpenAPI 3.1's dialect).

They say what the operations answer (``controller/api.py``, ``registry.Node.view``,
``views.template_views``), so a change there that breaks them fails the tests that check every
response against the document (``tests/integration/httpapi.py``). Objects the API answers
allow fields beyond those listed (a newer controller may add some); objects it reads list
every field it accepts and refuse others, as the routes do (``params.only``).
"""

from __future__ import annotations

from typing import Any

from gaffer.common.limits import MAX_COUNT, MAX_WAIT
from gaffer.common.model import InstanceState

NAME_PATTERN = "^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
INSTANCE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}\.([1-9][0-9]{0,6}|run-[1-9][0-9]{0,18})$"
STATES = [state.value for state in InstanceState]
CHANGES = ["created", "updated", "scaled", "unchanged"]


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema_type: str | list[str]) -> dict[str, Any]:
    types = [schema_type] if isinstance(schema_type, str) else list(schema_type)
    return {"type": [*types, "null"]}


def obj(properties: dict[str, Any], required: tuple[str, ...] = (), closed: bool = False, **extra: Any) -> dict[str, Any]:
    """An object schema: ``closed`` ones (request bodies) refuse fields they do not list."""
    schema: dict[str, Any] = {"type": "object", "properties": properties, **extra}
    if required:
        schema["required"] = list(required)
    if closed:
        schema["additionalProperties"] = False
    return schema


def page_of(item: str) -> dict[str, Any]:
    return obj({
        "items": {"type": "array", "items": ref(item)},
        "continue": {**nullable("string"), "description": "Pass as ?continue= for the next page; null on the last."},
    }, ("items", "continue"))


STRING = {"type": "string"}
INTEGER = {"type": "integer"}
NUMBER = {"type": "number"}
BOOLEAN = {"type": "boolean"}
STRINGS = {"type": "object", "additionalProperties": STRING}
NAME = {"type": "string", "pattern": NAME_PATTERN}

PROBLEM = obj({
    "type": {"type": "string", "format": "uri", "description": "https://gaffer.invalid/problems/<code>"},
    "title": STRING,
    "status": {"type": "integer", "minimum": 400, "maximum": 599},
    "detail": STRING,
    "code": {**STRING, "description": "The stable error code, as the ZeroMQ side answers it."},
    "field": {**STRING, "description": "The argument at fault, when one is."},
    "problems": {"type": "array", "items": obj(
        {"where": STRING, "field": STRING, "message": STRING}, ("where", "field", "message"),
    )},
    "details": {"type": "object"},
}, ("type", "title", "status", "detail", "code"), description="An RFC 9457 problem.")

FLAPPING = obj({"attempts": INTEGER, "window": NUMBER, "retry_in": NUMBER, "max_retry": INTEGER})
PLACEMENT = obj({
    "max_per_node": nullable("integer"), "nodes": {"type": "array", "items": STRING}, "labels": STRINGS,
})
LOG_FILES = obj({"dir": STRING, "max_bytes": INTEGER, "backups": INTEGER})
ID_NUMBER = {"type": ["integer", "string", "null"], "description": "A user or group: a name or a number."}

TEMPLATE_FIELDS: dict[str, Any] = {
    "name": NAME,
    "cmd": STRING,
    "args": {"type": "array", "items": STRING},
    "env": STRINGS,
    "os_env": BOOLEAN,
    "uid": ID_NUMBER,
    "gid": ID_NUMBER,
    "cwd": nullable("string"),
    "shell": BOOLEAN,
    "numprocesses": {"type": "integer", "minimum": 0, "maximum": MAX_COUNT},
    "graceful_timeout": NUMBER,
    "stop_signal": {"type": ["string", "integer"]},
    "startsecs": NUMBER,
    "restart": {"enum": ["always", "on-failure", "never"]},
    "exitcodes": {"type": "array", "items": INTEGER},
    "flapping": {"anyOf": [FLAPPING, {"type": "null"}]},
    "redirect_output": {"type": "array", "items": {"enum": ["out", "err"]}},
    "redirect_input": BOOLEAN,
    "log": {"anyOf": [LOG_FILES, {"type": "null"}]},
    "placement": PLACEMENT,
    "update": obj({"max_unavailable": INTEGER, "progress_deadline": {**NUMBER, "minimum": 1}}),
    "port": {"type": ["integer", "null"], "description": "The first instance's PORT (the others count up)."},
    "health": {"type": ["object", "null"], "description": "The readiness check: exec, http or tcp."},
    "notify": {**BOOLEAN, "description": "Ready when the process sends sd_notify READY=1."},
    "restart_on_unhealthy": BOOLEAN,
    "rlimits": {"type": "object", "description": "Resource limits by name: a soft and hard value, or one for both.",
                "additionalProperties": {"type": ["integer", "string", "array"]}},
    "umask": {"type": ["string", "integer"], "description": "An octal string (\"022\")."},
    "nice": {"type": "integer", "minimum": -20, "maximum": 19},
    "depends_on": {"type": "array", "description": "Templates that must be up first: a name (condition "
                   "ready), or {name, condition} with condition started, ready or completed.",
                   "items": {"anyOf": [NAME, obj({"name": NAME, "condition": {"enum": ["started", "ready", "completed"]}},
                                                 ("name",), closed=True)]}},
}

TEMPLATE_SPEC = obj(
    TEMPLATE_FIELDS, ("cmd",), closed=True,
    description="One template, as in a template file (docs: the template fields). The name "
                "comes from the path; a name in the body must be the same.",
)
TEMPLATE_SPEC_STORED = obj(TEMPLATE_FIELDS, ("name", "cmd", "numprocesses"), description="A template as stored.")

TEMPLATE = obj({
    "name": NAME,
    "version": {**INTEGER, "description": "Bumped by every stored change."},
    "paused": BOOLEAN,
    "numprocesses": INTEGER,
    "limited": {"anyOf": [obj({"wanted": INTEGER, "placing": INTEGER, "reason": STRING}), {"type": "null"}]},
    "placed": INTEGER,
    "running": INTEGER,
    "ready": {**INTEGER, "description": "Instances whose row says ready (serving)."},
    "pending": {"type": ["object", "null"]},
    "rolling": BOOLEAN,
    "rollout_stuck": {**BOOLEAN, "description": "The rolling update made no progress for update.progress_deadline."},
    "launch": {**STRING, "description": "get only: the spec digest instances of the current version report."},
    "spec": ref("TemplateSpecStored"),
    "created_at": NUMBER,
    "updated_at": NUMBER,
}, ("name", "version", "paused", "numprocesses", "placed", "running", "spec"))

CHANGE = obj({
    "name": NAME, "change": {"enum": CHANGES}, "version": INTEGER,
}, ("name", "change", "version"))

APPLIED = obj({
    "counts": {"type": "object", "additionalProperties": INTEGER, "description": "Templates per change."},
    "results": {"type": "array", "items": ref("Change")},
    "more": {**INTEGER, "description": "Changed templates left out of results (a very large apply)."},
}, ("counts", "results", "more"))

NODE = obj({
    "name": NAME,
    "state": {"enum": ["up", "suspect", "down"]},
    "address": nullable("string"),
    "labels": STRINGS,
    "cordoned": BOOLEAN,
    "draining": BOOLEAN,
    "instances": INTEGER,
    "cpus": nullable("integer"),
    "memory": nullable("integer"),
    "load": {"type": "array", "items": NUMBER},
    "version": nullable("string"),
    "last_heartbeat": {**nullable("number"), "description": "Seconds since the agent was last heard."},
    "connected_at": nullable("number"),
    "generation": nullable("integer"),
    "dropped": {"type": "object"},
}, ("name", "state", "labels", "cordoned", "draining", "instances"))

INSTANCE = obj({
    "id": {"type": "string", "pattern": INSTANCE_ID_PATTERN},
    "template": NAME,
    "ordinal": {"type": ["integer", "string"]},
    "node": nullable("string"),
    "pid": nullable("integer"),
    "state": {"enum": STATES},
    "restarts": INTEGER,
    "started_at": nullable("number"),
    "spec": nullable("string"),
    "stale": {**BOOLEAN, "description": "Still runs on a node it no longer belongs to."},
    "ready": {**BOOLEAN, "description": "Serving: ready, or running for a template with neither a check nor notify."},
    "reason": {**STRING, "description": "Why it is pending."},
    "port": nullable("integer"),
    "cpu": {**nullable("number"), "description": "Percent of one core, the process and its children."},
    "mem": {**nullable("integer"), "description": "RSS bytes, the process and its children."},
    "uptime": nullable("number"),
    "age": {**nullable("number"), "description": "Seconds since the cpu and mem sample."},
}, ("id", "template", "ordinal", "node", "pid", "state", "restarts", "stale"))

PROCESS_SAMPLE = obj({"pid": INTEGER, "cpu": NUMBER, "mem": INTEGER}, ("pid", "cpu", "mem"))
INSTANCE_STATS = obj({
    "id": STRING, "pid": INTEGER, "cpu": NUMBER, "mem": INTEGER,
    "cmdline": {"type": "array", "items": STRING},
    "children": {"type": "array", "items": PROCESS_SAMPLE},
}, ("id", "pid", "cpu", "mem"))

STATUS = obj({
    "controller": STRING, "version": STRING, "uptime": NUMBER, "endpoint": STRING, "events": STRING,
    "http": nullable("string"), "secure": BOOLEAN, "transport": STRING,
    "nodes": {"type": "object", "additionalProperties": INTEGER},
    "templates": INTEGER,
    "instances": obj({"wanted": INTEGER, "placed": INTEGER, "running": INTEGER, "ready": INTEGER}),
    "samples": obj({
        "instances": {**INTEGER, "description": "Instances with a cpu/mem sample pushed by their agent."},
        "nodes": {**INTEGER, "description": "Nodes those samples come from."},
        "pushes": {**INTEGER, "description": "Stats pushes received since the controller started."},
        "oldest_age": {**nullable("number"), "description": "Seconds since the oldest sample was confirmed."},
    }, ("instances", "nodes", "pushes", "oldest_age"), description="The stats agents push (ps answers from them)."),
}, ("controller", "version", "uptime", "http", "nodes", "templates", "instances", "samples"))

SCALE = obj({
    "count": {
        "oneOf": [
            {"type": "integer", "minimum": 0, "maximum": MAX_COUNT},
            {"type": "string", "pattern": "^[+-]?[0-9]{1,7}$"},
        ],
        "description": "The new count, or a change to it (\"+2\", \"-1\").",
    },
}, ("count",), closed=True)
SCALED = obj({"name": NAME, "numprocesses": INTEGER, "previous": nullable("integer")}, ("name", "numprocesses"))
PAUSED = obj({"name": NAME, "paused": BOOLEAN}, ("name", "paused"))
RESTARTING = obj({"name": NAME, "restarting": BOOLEAN}, ("name", "restarting"))
DELETED = obj({"name": NAME, "deleted": BOOLEAN}, ("name", "deleted"))
CORDONED = obj({"node": NAME, "cordoned": BOOLEAN}, ("node", "cordoned"))
FORGOTTEN = obj({
    "node": NAME, "forgotten": BOOLEAN,
    "moving": {**INTEGER, "description": "Slots the node held, placed elsewhere now."},
}, ("node", "forgotten", "moving"))
DRAIN = obj({"wait": {"type": "number", "minimum": 0, "maximum": MAX_WAIT, "description": "Seconds (default 60)."}},
            closed=True)
DRAINED = obj({
    "node": NAME, "done": BOOLEAN, "remaining": INTEGER,
    "stuck": {"type": "array", "items": {"type": "object"}, "description": "Why what is left cannot move."},
}, ("node", "done", "remaining"))
SIGNAL = obj({
    "signal": {"type": ["string", "integer"], "description": "A name (TERM, SIGHUP) or a number; default TERM."},
    "group": {**BOOLEAN, "description": "Signal the whole process group."},
}, closed=True)
SIGNALLED = obj({
    "pids": {"type": "object", "additionalProperties": {"type": "array", "items": INTEGER},
             "description": "The pids signalled, by node."},
}, ("pids",))
STDIN = obj({"data": STRING, "eof": {**BOOLEAN, "description": "Close stdin after the data."}}, ("data",), closed=True)
WRITTEN = obj({"id": STRING, "node": NAME, "bytes": INTEGER}, ("id", "node", "bytes"))
RUN = obj({
    "name": NAME,
    "args": {"type": "array", "items": STRING, "description": "Arguments after the template's own."},
    "env": STRINGS,
}, ("name",), closed=True)
RUN_STARTED = obj({"id": STRING, "node": NAME, "stdin": BOOLEAN}, ("id", "node"))

TOKEN = obj({
    "name": NAME, "role": {"enum": ["viewer", "operator", "admin"]},
    "created": nullable("number"), "last_used": nullable("number"),
}, ("name", "role"))
TOKEN_CREATE = obj({"name": NAME, "role": {"enum": ["viewer", "operator", "admin"]}}, ("name", "role"), closed=True)
TOKEN_CREATED = obj({
    "name": NAME, "role": STRING, "secret": {**STRING, "description": "Shown once; only its hash is kept."},
}, ("name", "role", "secret"))
TOKEN_REVOKED = obj({"name": NAME, "revoked": BOOLEAN}, ("name",))

LOG_LINE = obj({
    "id": STRING, "node": STRING, "stream": {"enum": ["out", "err"]}, "ts": NUMBER, "line": STRING,
    "number": {**INTEGER, "description": "The line's number in its instance's stream."},
}, ("id", "node", "stream", "ts", "line"))
ROLE = {"enum": ["viewer", "operator", "admin"]}
PRINCIPAL = obj({"name": STRING, "role": ROLE}, ("name", "role"))
SESSION = obj({
    "token": {**STRING, "description": "A session token: send it as the bearer token from now on."},
    "name": STRING, "role": ROLE,
    "expires": {**NUMBER, "description": "When it expires (Unix time)."},
}, ("token", "role", "expires"))

SCHEMAS: dict[str, Any] = {
    "Problem": PROBLEM,
    "Status": STATUS,
    "Node": NODE,
    "NodeList": page_of("Node"),
    "Cordoned": CORDONED,
    "Forgotten": FORGOTTEN,
    "Drain": DRAIN,
    "Drained": DRAINED,
    "TemplateSpec": TEMPLATE_SPEC,
    "TemplateSpecStored": TEMPLATE_SPEC_STORED,
    "Template": TEMPLATE,
    "TemplateList": page_of("Template"),
    "Change": CHANGE,
    "Applied": APPLIED,
    "Scale": SCALE,
    "Scaled": SCALED,
    "Paused": PAUSED,
    "Restarting": RESTARTING,
    "Deleted": DELETED,
    "Instance": INSTANCE,
    "InstanceList": page_of("Instance"),
    "InstanceStats": INSTANCE_STATS,
    "Signal": SIGNAL,
    "Signalled": SIGNALLED,
    "Stdin": STDIN,
    "Written": WRITTEN,
    "Run": RUN,
    "RunStarted": RUN_STARTED,
    "Token": TOKEN,
    "TokenList": page_of("Token"),
    "TokenCreate": TOKEN_CREATE,
    "TokenCreated": TOKEN_CREATED,
    "TokenRevoked": TOKEN_REVOKED,
    "LogLine": LOG_LINE,
    "Principal": PRINCIPAL,
    "Session": SESSION,
}
