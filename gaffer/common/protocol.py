"""gaffer's wire protocol: a versioned msgpack envelope, one strict schema per kind, and a codec.

Every ZMQ message between agents, the controller and clients is one frame holding the msgpack
array ``[version, kind, seq, body]``. ``decode`` never trusts the peer: it refuses a frame over
``MAX_MESSAGE`` before unpacking, unpacks with hard limits, and checks the envelope and then the
body against its kind's schema, raising ProtocolError with a machine ``reason`` and a message
naming the field. ``encode`` checks the body too, so a bug on the sending side fails loudly in
tests instead of being dropped by the receiver. Bodies carry no authority: who sent a message is
decided by the socket layer from the authenticated CURVE key, never from its content.

docs/PROTOCOL.md describes each kind, who sends it, and the flows built from them.
"""

from __future__ import annotations

import math

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import msgpack

from gaffer.common import schema as s
from gaffer.common.errors import Problem, ProtocolError
from gaffer.common.limits import LABEL_RE, MAX_COUNT, NAME_RE
from gaffer.common.model import AGENT_STATES
from gaffer.common.parts import MAX_PARTS

PROTOCOL_VERSION = 5
"""2: ``assign`` carries the controller's per-node decisions in ``controls`` (no longer inside
the specs), ``ack`` errors are structured, errors carry ``details``. 3: an agent's state events
are numbered (``events[].seq``, ``events.lost``) and acknowledged (``events_ack``,
``welcome.events_upto``). 4: agents push sampled stats (``stats``), which a controller of 3
would drop as an unknown kind. 5: instances may be ``ready`` or ``unhealthy``, and every row
says whether it is ``ready`` (issue 12)."""
MAX_MESSAGE = 4 * 1024 * 1024

MAX_INT = 2**63 - 1
MAX_CONTAINER = 131_072
MAX_INSTANCES = 100_000
MAX_TEMPLATES = 10_000
MAX_EVENTS = 10_000
MAX_TEXT = 65_536
MAX_STAT_ROWS = 10_000
"""Rows of one ``stats`` message: an agent with more instances sends several (about 70 bytes
a row, so one message stays far under MAX_MESSAGE)."""
MAX_CPU = 100.0 * 65_536
"""Percent of one core, a process and its children: at most every core of the largest host."""
MAX_TEMPLATE_BYTES = 256 * 1024
"""One template's spec, encoded: far more than any real template needs, and small enough that
an assignment part always holds at least one (two 2.5 MB arguments once wedged a node)."""

TOO_LARGE = "too_large"
NOT_MSGPACK = "not_msgpack"
BAD_ENVELOPE = "bad_envelope"
UNKNOWN_VERSION = "unknown_version"
UNKNOWN_KIND = "unknown_kind"
UNEXPECTED_KIND = "unexpected_kind"
BAD_BODY = "bad_body"
REASONS = (TOO_LARGE, NOT_MSGPACK, BAD_ENVELOPE, UNKNOWN_VERSION, UNKNOWN_KIND, UNEXPECTED_KIND,
           BAD_BODY)

INSTANCE_STATES = AGENT_STATES


@dataclass(frozen=True, slots=True)
class Message:
    """One decoded, validated message. ``body`` is the plain map its kind's schema accepted."""

    version: int
    kind: str
    seq: int
    body: dict[str, Any]


# ---------------------------------------------------------------- field types

_NAME = s.string(64, 1, NAME_RE, expect="a name (letters, digits, '-', '_', starting with a "
                 "letter or digit, at most 64 characters)")
_LABEL_KEY = s.string(64, 1, LABEL_RE, expect="a label key (letters, digits, '_', '.', '/', '-', "
                      "starting and ending with a letter or digit, at most 64 characters)")
_COUNTER = s.integer(0, MAX_INT)
_ID = _COUNTER
_BOOL = s.boolean()
_TIME = s.number(0.0)
_WORD = s.string(64, 1)
_TEXT = s.string(MAX_TEXT)
_TOPIC = s.string(256, 1)
_ANY = s.plain_value
_MAP = s.plain_map(MAX_CONTAINER)

_PROBLEM = s.struct({"where": s.string(256), "field": s.string(256), "message": _TEXT})
_DETAIL = s.nullable(s.either(s.string(4_096), s.integer(-MAX_INT, MAX_INT)))
_ERROR = s.struct(
    {"code": _WORD, "message": _TEXT},
    optional={
        "problems": s.list_of(_PROBLEM, 1_000),
        "details": s.map_of(s.string(64, 1), _DETAIL, 16),
    },
)
_ASSIGN_ERROR = s.struct({"template": _NAME, "code": _WORD, "message": s.string(4_096)})
"""A template an agent could not apply: which, the error's code, and its message."""
_CONTROL = s.struct({
    "count": s.integer(0, MAX_COUNT),
    "allowance": s.integer(1, MAX_COUNT),
    "restart": _COUNTER,
}, optional={"paused": _BOOL})
"""The controller's decisions about one template on one node, beside (never inside) its spec:
how many ordinals run here, how many of them may be down at once for a rolling update, the
template's restart generation (a change restarts every instance, rolling), and whether it is
paused (then it has no ordinals: the node keeps it, stopped)."""

_INSTANCE_ID = s.string(129, 1)
_INSTANCE = s.struct({
    "id": _INSTANCE_ID,
    "template": _NAME,
    "ordinal": s.either(s.integer(1, MAX_INT), _WORD),
    "pid": s.nullable(s.integer(1, 2**31 - 1)),
    "state": s.one_of(INSTANCE_STATES),
    "restarts": _COUNTER,
    "started_at": s.nullable(_TIME),
    "spec": s.nullable(_WORD),
    "ready": _BOOL,
}, optional={"exit_code": s.integer(0, 255)})
"""``exit_code``: only on an ``exited`` row whose process exited with a status (not a signal),
so the controller can tell a job that completed (0) for ``depends_on``."""
_INSTANCES = s.list_of(_INSTANCE, MAX_INSTANCES)
_STAT_ROW = s.struct({
    "id": _INSTANCE_ID,
    "pid": s.integer(1, 2**31 - 1),
    "cpu": s.number(0.0, MAX_CPU),
    "mem": _COUNTER,
    "children": s.integer(0, MAX_CONTAINER),
})
"""One instance's sample: its pid, cpu (percent of one core) and RSS bytes of the process and
its children, and how many children it has."""
_HOST = s.struct({
    "tracking": s.one_of(("cgroup", "subreaper")),
    "keeper": s.one_of(("running", "restarting", "off")),
})
"""How the agent keeps its processes: descendants tracked by cgroup or as a subreaper, and the
state of its fd keeper. Optional in hello (always sent by agents that know it) and in
heartbeat (only when it changed)."""


def _outcome_matches_ok(body: dict[str, Any]) -> None:
    """``ok`` and ``error`` must agree, so a receiver never has to guess which one to believe."""
    if body["ok"] and body["error"] is not None:
        raise _invalid_at("error", "must be null when ok is true")
    if not body["ok"] and body["error"] is None:
        raise _invalid_at("error", "must describe the failure when ok is false")


def _assign_consistent(body: dict[str, Any]) -> None:
    """Ordinals for a template the assignment does not carry could never be started, and each
    template carried needs its controls; a part must be one of its count (see
    gaffer.common.parts)."""
    templates, controls = body["templates"], body["controls"]
    for name in body["ordinals"]:
        if name not in templates:
            raise _invalid_at(f"ordinals.{name}", "names a template missing from templates")
    if len(controls) != len(templates) or any(name not in controls for name in templates):
        missing = next((n for n in templates if n not in controls), None)
        if missing is not None:
            raise _invalid_at(f"controls.{missing}", "is required for every template")
        extra = next(n for n in controls if n not in templates)
        raise _invalid_at(f"controls.{extra}", "names a template missing from templates")
    part = body.get("part")
    if part is not None and not 0 <= part[0] < part[1]:
        raise _invalid_at("part", "must be [index, count] with 0 <= index < count")


def _invalid_at(field: str, message: str) -> s.Invalid:
    error = s.Invalid(message)
    error.path.append("." + field)
    return error


# ---------------------------------------------------------------- kinds

_SCHEMAS: dict[str, s.Check] = {
    # agent -> controller
    "hello": s.struct({
        "node": _NAME,
        "labels": s.map_of(_LABEL_KEY, s.string(256), 64),
        "cpus": s.integer(1, 65_536),
        "memory": s.integer(0, MAX_INT),
        "version": _WORD,
        "protocol": s.integer(1, 65_535),
        "agent_id": _WORD,
        "incarnation": _WORD,
        "generation": _COUNTER,
        "instances": _INSTANCES,
    }, optional={"host": _HOST}),
    "heartbeat": s.struct({
        "load": s.list_of(_TIME, 3, 3),
        "digest": s.string(128),
        "instances": _COUNTER,
        "generation": _COUNTER,
    }, optional={"host": _HOST, "dropped": s.map_of(_WORD, _COUNTER, 16)}),
    "report": s.struct({
        "instances": _INSTANCES,
        "removed": s.list_of(_INSTANCE_ID, MAX_INSTANCES),
        "full": _BOOL,
    }),
    "events": s.struct({
        "events": s.list_of(
            s.struct({"seq": _COUNTER, "topic": _TOPIC, "ts": _TIME, "data": _MAP}), MAX_EVENTS,
        ),
    }, optional={"lost": _COUNTER}),
    "stats": s.struct({
        "rows": s.list_of(_STAT_ROW, MAX_STAT_ROWS),
        "removed": s.list_of(_INSTANCE_ID, MAX_STAT_ROWS),
        "reset": _BOOL,
    }),
    "ack": s.struct({
        "generation": _COUNTER,
        "ok": _BOOL,
        "errors": s.list_of(_ASSIGN_ERROR, 1_000),
    }),
    "result": s.struct(
        {"id": _ID, "ok": _BOOL, "result": _ANY, "error": s.nullable(_ERROR)},
        post=_outcome_matches_ok,
    ),
    "pong": s.struct({"nonce": _ID}),
    # controller -> agent
    "welcome": s.struct({
        "node": _NAME,
        "controller": _WORD,
        "heartbeat": s.number(0.001, 3_600.0),
        "timeout": s.number(0.001, 86_400.0),
        "events_upto": _COUNTER,
    }),
    "events_ack": s.struct({"upto": _COUNTER}),
    "refuse": s.struct({"code": _WORD, "message": _TEXT}),
    "beat": s.struct({"generation": _COUNTER}),
    "assign": s.struct(
        {
            "generation": _COUNTER,
            "templates": s.map_of(_NAME, _MAP, MAX_TEMPLATES),
            "ordinals": s.map_of(_NAME, s.list_of(s.integer(1, MAX_INT), MAX_INSTANCES),
                                 MAX_TEMPLATES),
            "controls": s.map_of(_NAME, _CONTROL, MAX_TEMPLATES),
        },
        optional={"part": s.list_of(s.integer(0, MAX_PARTS), 2, 2)},
        post=_assign_consistent,
    ),
    "command": s.struct({"id": _ID, "op": _WORD, "args": _MAP}),
    "ping": s.struct({"nonce": _ID}),
    # client -> controller, and back
    "request": s.struct({"id": _ID, "op": _WORD, "args": _MAP}),
    "reply": s.struct(
        {"id": _ID, "ok": _BOOL, "result": _ANY, "error": s.nullable(_ERROR)},
        post=_outcome_matches_ok,
    ),
    # controller -> subscribers
    "event": s.struct(
        {"seq": _COUNTER, "topic": _TOPIC, "ts": _TIME, "data": _MAP},
        optional={"prev": s.map_of(s.string(256), _COUNTER, 64)},
    ),
}

_EVENT_SCHEMA = _SCHEMAS["event"]
_FLAT = frozenset({str, int, float, bool, bytes, type(None)})


def _check_event(body: Any) -> None:
    """The ``event`` schema, its usual shape checked inline: every subscriber checks every
    event, and the generic checks cost five times the unpacking. Anything else (nested data, a
    wrong field) goes through the schema itself, so it is refused with the schema's message."""
    if type(body) is dict and len(body) == (5 if "prev" in body else 4):
        seq, topic, ts, data = body.get("seq"), body.get("topic"), body.get("ts"), body.get("data")
        if (
            type(seq) is int and 0 <= seq <= MAX_INT
            and type(topic) is str and 0 < len(topic) <= 256
            and (type(ts) is float or type(ts) is int) and 0.0 <= ts < math.inf
            and type(data) is dict and len(data) <= MAX_CONTAINER and _flat_map(data)
            and ("prev" not in body or _positions(body["prev"]))
        ):
            return
    _EVENT_SCHEMA(body)


def _flat_map(data: dict[Any, Any]) -> bool:
    for name, value in data.items():
        if type(name) is not str or type(value) not in _FLAT:
            return False
    return True


def _positions(prev: Any) -> bool:
    if type(prev) is not dict or len(prev) > 64:
        return False
    for prefix, position in prev.items():
        if type(prefix) is not str or len(prefix) > 256 or type(position) is not int or not 0 <= position <= MAX_INT:
            return False
    return True


_SCHEMAS["event"] = _check_event


def _check_batch(body: Any) -> None:
    """A ``batch`` of published events: ``{prev, events}``, each event ``[seq, topic, ts,
    data]`` with flat ``data`` as an ``event``'s, positions ascending. Checked inline (every
    reader checks every event; names bound as locals, a third of the check's time); an event of
    another shape goes through the ``event`` schema so the refusal names the field."""
    if type(body) is not dict or len(body) != 2 or type(body.get("events")) is not list:
        _BATCH_SHAPE(body)
        raise s.Invalid("must be {prev, events}")
    _check_batch_events(body.get("prev"), body["events"], body)


def _check_batch_events(
    prev: Any, events: list[Any], body: dict[str, Any], top: int = MAX_INT, inf: float = math.inf,
    flat: Any = _flat_map, most: int = MAX_CONTAINER, type: Any = type, len: Any = len,
    list: Any = list, int: Any = int, str: Any = str, float: Any = float, dict: Any = dict,
) -> None:
    if type(prev) is not int or not 0 <= prev <= top:
        _BATCH_SHAPE(body)
    if not 1 <= len(events) <= MAX_EVENTS:
        raise _invalid_at("events", f"must hold 1..{MAX_EVENTS} events, got {len(events)}")
    last = prev
    for index, event in enumerate(events):
        if type(event) is list and len(event) == 4:
            seq, topic, ts, data = event
            if (
                type(seq) is int and last < seq <= top
                and type(topic) is str and 0 < len(topic) <= 256
                and (type(ts) is float or type(ts) is int) and 0.0 <= ts < inf
                and type(data) is dict and len(data) <= most and flat(data)
            ):
                last = seq
                continue
        _batch_event_problem(index, event, last)
        last = event[0]


def _batch_event_problem(index: int, event: Any, last: int) -> None:
    """Why ``events[index]`` is refused (s.Invalid), or nothing when only the inline check was
    too strict (nested data the ``event`` schema allows)."""
    if type(event) is not list or len(event) != 4:
        raise _invalid_at(f"events[{index}]", f"must be [seq, topic, ts, data], got {s.describe(event)}")
    if type(event[0]) is int and event[0] <= last:
        raise _invalid_at(f"events[{index}]", f"positions must ascend past prev: {event[0]} after {last}")
    try:
        _EVENT_SCHEMA(dict(zip(("seq", "topic", "ts", "data"), event)))
    except s.Invalid as exc:
        error = s.Invalid(exc.message)
        error.path.extend([*exc.path, f".events[{index}]"])
        raise error from None


_BATCH_SHAPE = s.struct({"prev": _COUNTER, "events": s.list_of(_ANY, MAX_EVENTS, 1)})
_SCHEMAS["batch"] = _check_batch

KINDS = frozenset(_SCHEMAS)
AGENT_TO_CONTROLLER = frozenset({"hello", "heartbeat", "report", "stats", "events", "ack", "result", "pong"})
CONTROLLER_TO_AGENT = frozenset({"welcome", "refuse", "beat", "assign", "command", "ping", "events_ack"})
CLIENT_TO_CONTROLLER = frozenset({"request"})
CONTROLLER_TO_CLIENT = frozenset({"reply"})
PUBLISHED = frozenset({"event", "batch"})


def instances_digest(instances: Iterable[Mapping[str, Any]]) -> str:
    """``heartbeat.digest``: a short hash of what an agent runs, for the controller to compare.

    It covers each instance's id, state, pid and spec, in id order, so the agent (from its
    Manager) and the controller (from its last report) get the same digest for the same table
    however they built it; a mismatch means the controller's view is stale.
    """
    import hashlib  # here, not at the top: a client never digests, and gafferctl starts faster

    rows = sorted(
        ((i["id"], i["state"], i["pid"], i["spec"]) for i in instances), key=lambda row: row[0]
    )
    return hashlib.blake2b(msgpack.packb(rows), digest_size=8).hexdigest()


def oversized_templates(items: Iterable[Any]) -> list[Problem]:
    """A problem for each template (plain data) bigger than MAX_TEMPLATE_BYTES encoded."""
    problems = []
    for index, item in enumerate(items):
        try:
            size = len(msgpack.packb(item, use_bin_type=True))
        except (TypeError, ValueError, OverflowError):
            continue  # not plain data: validation names the field
        if size > MAX_TEMPLATE_BYTES:
            name = item.get("name") if isinstance(item, dict) else None
            where = name if isinstance(name, str) and name else f"[{index}]"
            problems.append(Problem(
                where, "", f"the template is {size:,} bytes encoded; the limit is "
                f"{MAX_TEMPLATE_BYTES:,} (keep big data in files the command reads)",
            ))
    return problems


# ---------------------------------------------------------------- codec

def validate(kind: str, body: Any) -> None:
    """Check ``body`` against the schema of ``kind``; ProtocolError (bad_body) names the field."""
    check = _SCHEMAS.get(kind)
    if check is None:
        raise ProtocolError(UNKNOWN_KIND, f"unknown message kind {s.describe(kind)}")
    try:
        check(body)
    except s.Invalid as exc:
        raise ProtocolError(BAD_BODY, f"{kind}{exc.where()}: {exc.message}", kind) from None


def encode(kind: str, seq: int, body: dict[str, Any]) -> bytes:
    """One frame for ``body``; raises ProtocolError if it does not fit its schema or the limit.
    A reply's ``result`` may be ``Prepacked``: its bytes go in as they are."""
    validate(kind, body)
    if isinstance(body.get("result"), s.Prepacked):
        return _spliced(kind, seq, body)
    return encode_checked(kind, seq, body)


def _spliced(kind: str, seq: int, body: dict[str, Any]) -> bytes:
    """The frame ``encode_checked`` would make were each ``Prepacked`` value of ``body`` the
    value it packs: the envelope and the body's map written here, the prepacked bytes
    copied in (msgpack writes a map's entries in its order, after a header of their count)."""
    _check_seq(seq, kind)
    pack = msgpack.Packer(use_bin_type=True).pack
    parts = [b"\x94", pack(PROTOCOL_VERSION), pack(kind), pack(seq), map_header(len(body))]
    for key, value in body.items():
        parts.append(pack(key))
        parts.append(value.packed() if isinstance(value, s.Prepacked) else pack(value))
    frame = b"".join(parts)
    if len(frame) > MAX_MESSAGE:
        raise ProtocolError(TOO_LARGE, f"{kind}: {len(frame)} bytes encoded, the limit is {MAX_MESSAGE}", kind)
    return frame


def map_header(count: int) -> bytes:
    """What msgpack writes before the ``count`` entries of a map."""
    if count < 16:
        return bytes((0x80 | count,))
    return b"\xde" + count.to_bytes(2, "big") if count < 1 << 16 else b"\xdf" + count.to_bytes(4, "big")


def array_header(count: int) -> bytes:
    """What msgpack writes before the ``count`` items of an array."""
    if count < 16:
        return bytes((0x90 | count,))
    return b"\xdc" + count.to_bytes(2, "big") if count < 1 << 16 else b"\xdd" + count.to_bytes(4, "big")


def encode_checked(kind: str, seq: int, body: dict[str, Any]) -> bytes:
    """``encode`` for a body already known to fit its schema: the hub's events, which the
    controller either built itself or admitted against their topic's schema. Checking such a
    body again cost more than packing it, on every event published; the envelope and the size
    limit are still checked."""
    _check_seq(seq, kind)
    try:
        frame = msgpack.packb([PROTOCOL_VERSION, kind, seq, body], use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ProtocolError(BAD_BODY, f"{kind}: cannot encode: {exc}", kind) from exc
    if len(frame) > MAX_MESSAGE:
        raise ProtocolError(
            TOO_LARGE, f"{kind}: {len(frame)} bytes encoded, the limit is {MAX_MESSAGE}", kind
        )
    return frame


def decode(frame: bytes | bytearray | memoryview, allowed: frozenset[str] | None = None) -> Message:
    """The Message in ``frame`` (any bytes-like, a zmq.Frame too), or ProtocolError saying why not.

    ``allowed`` is the set of kinds this receiver accepts from this peer (one of the role sets
    such as AGENT_TO_CONTROLLER); a known kind outside it is ``unexpected_kind``. The version
    is read before the arity is checked, so a future version may reshape the rest.
    """
    if len(frame) > MAX_MESSAGE:
        raise ProtocolError(TOO_LARGE, f"{len(frame)} bytes, the limit is {MAX_MESSAGE}")
    try:
        # Limits spelled out, not **kwargs: expanding a dict costs more than unpacking a heartbeat.
        data = msgpack.unpackb(
            frame, max_str_len=MAX_MESSAGE, max_bin_len=MAX_MESSAGE, max_array_len=MAX_CONTAINER,
            max_map_len=MAX_CONTAINER, max_ext_len=0, ext_hook=_refuse_ext, strict_map_key=True,
            raw=False, use_list=True,
        )
    except Exception as exc:  # the unpacker's failures share no base class; none may escape
        raise ProtocolError(NOT_MSGPACK, f"cannot unpack: {_unpack_problem(exc)}") from None
    if type(data) is not list or not data:
        raise ProtocolError(BAD_ENVELOPE, f"the envelope must be a list, got {s.describe(data)}")
    version = data[0]
    if type(version) is not int:
        raise ProtocolError(BAD_ENVELOPE, f"version must be an integer, got {s.describe(version)}")
    if version != PROTOCOL_VERSION:
        raise ProtocolError(
            UNKNOWN_VERSION, f"protocol version {version} (this side speaks {PROTOCOL_VERSION})"
        )
    if len(data) != 4:
        raise ProtocolError(
            BAD_ENVELOPE, f"the envelope must be [version, kind, seq, body], got {len(data)} items"
        )
    _, kind, seq, body = data
    check = _SCHEMAS.get(kind) if type(kind) is str else None
    if check is None:
        reason = UNKNOWN_KIND if type(kind) is str else BAD_ENVELOPE
        raise ProtocolError(reason, f"unknown message kind {s.describe(kind)}")
    if allowed is not None and kind not in allowed:
        raise ProtocolError(UNEXPECTED_KIND, f"{kind!r} is not accepted from this peer", kind)
    _check_seq(seq, kind)
    try:
        check(body)
    except s.Invalid as exc:
        raise ProtocolError(BAD_BODY, f"{kind}{exc.where()}: {exc.message}", kind) from None
    return Message(version, kind, seq, body)


def _check_seq(seq: Any, kind: str) -> None:
    if type(seq) is not int or not 0 <= seq <= MAX_INT:
        message = f"seq must be an integer >= 0, got {s.describe(seq)}"
        raise ProtocolError(BAD_ENVELOPE, message, kind)


def _refuse_ext(code: int, data: bytes) -> Any:
    raise ValueError(f"msgpack extension type {code} is not used by this protocol")


def _unpack_problem(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    if "max_ext_len" in text:
        return "msgpack extension types are not used by this protocol"
    return text if len(text) <= 200 else text[:200] + "..."
