"""The JSON of etcd's v3 gateway, both ways (pure: no sockets).

The gateway is grpc-gateway's proto3 JSON mapping of etcd's gRPC API, which has two habits a
reader must know:

- ``bytes`` fields (keys, values, range ends) are base64 strings;
- ``int64`` fields (revisions, lease ids, TTLs, counts) are decimal strings, and a field whose
  value is zero (or false, or empty) is left out of an answer altogether: a missing
  ``succeeded`` means false, a missing ``create_revision`` means 0 (the key does not exist).

Requests are built here as plain dicts and answers read into frozen values; every number read
is checked to be an integer in int64 range, so a malformed answer becomes one clear
StoreRejected instead of a KeyError or TypeError further up.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any, Iterable, Literal

from gaffer.common.errors import StoreRejected

INT64_MAX = 2**63 - 1
UINT64_MAX = 2**64 - 1

Target = Literal["CREATE", "MOD", "VERSION", "VALUE", "LEASE"]
Result = Literal["EQUAL", "GREATER", "LESS", "NOT_EQUAL"]

_TARGET_FIELD = {
    "CREATE": "create_revision",
    "MOD": "mod_revision",
    "VERSION": "version",
    "VALUE": "value",
    "LEASE": "lease",
}


def as_bytes(data: bytes | str) -> bytes:
    return data.encode() if isinstance(data, str) else bytes(data)


def b64(data: bytes | str) -> str:
    """A key or value as the gateway wants it."""
    return base64.b64encode(as_bytes(data)).decode("ascii")


def unb64(text: Any, field: str = "value") -> bytes:
    """A base64 field of an answer; absent (None) is empty."""
    if text is None:
        return b""
    if not isinstance(text, str):
        raise malformed(f"{field} is not a base64 string")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise malformed(f"{field} is not valid base64") from None


def number(raw: dict, field: str, unsigned: bool = False) -> int:
    """An int64 field of an answer (a decimal string, or a JSON number), or a uint64 one
    (member ids); absent is 0."""
    value = raw.get(field)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise malformed(f"{field} is not an integer")
    try:
        parsed = int(value)
    except ValueError:
        raise malformed(f"{field} is not an integer") from None
    low, high = (0, UINT64_MAX) if unsigned else (-INT64_MAX - 1, INT64_MAX)
    if not low <= parsed <= high:
        raise malformed(f"{field} is out of {'uint64' if unsigned else 'int64'} range")
    return parsed


def malformed(what: str) -> StoreRejected:
    return StoreRejected(f"etcd answered malformed JSON: {what}", 0, "malformed")


def prefix_end(prefix: bytes) -> bytes:
    """The ``range_end`` that makes a range cover every key starting with ``prefix``."""
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\0"


@dataclass(frozen=True)
class KeyValue:
    """One key as etcd holds it. ``create_revision`` is the revision that created this life of
    the key (0: absent); it changes only when the key is deleted and created again, which is why
    it names a leadership term."""

    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int


def key_value(raw: Any) -> KeyValue:
    if not isinstance(raw, dict):
        raise malformed("a kv is not an object")
    return KeyValue(
        key=unb64(raw.get("key"), "key"),
        value=unb64(raw.get("value"), "value"),
        create_revision=number(raw, "create_revision"),
        mod_revision=number(raw, "mod_revision"),
        version=number(raw, "version"),
        lease=number(raw, "lease"),
    )


def header_revision(answer: dict) -> int:
    header = answer.get("header")
    return number(header, "revision") if isinstance(header, dict) else 0


@dataclass(frozen=True)
class Range:
    """What a range read found, and the store's revision when it read."""

    kvs: tuple[KeyValue, ...]
    count: int
    revision: int
    more: bool


def range_answer(answer: dict) -> Range:
    kvs = answer.get("kvs") or []
    if not isinstance(kvs, list):
        raise malformed("kvs is not a list")
    return Range(tuple(key_value(kv) for kv in kvs), number(answer, "count"),
                 header_revision(answer), bool(answer.get("more", False)))


@dataclass(frozen=True)
class Compare:
    """One compare of a transaction: ``target`` of ``key`` ``result`` ``value``
    (e.g. CREATE of b"/gaffer/leader" EQUAL 42)."""

    key: bytes
    target: Target
    result: Result
    value: int | bytes

    def plain(self) -> dict:
        field = _TARGET_FIELD[self.target]
        value = b64(self.value) if self.target == "VALUE" else str(self.value)
        return {"key": b64(self.key), "target": self.target, "result": self.result, field: value}


def created_at(key: bytes | str, revision: int) -> Compare:
    """The key exists with this create revision (``revision`` 0: the key does not exist)."""
    return Compare(as_bytes(key), "CREATE", "EQUAL", revision)


@dataclass(frozen=True)
class Guard:
    """A leader's guard: the election ``key`` still has create revision ``term`` (the key was
    not deleted and created again since this leader won it)."""

    key: bytes
    term: int

    def compare(self) -> Compare:
        return created_at(self.key, self.term)


def put_op(key: bytes | str, value: bytes | str, lease: int = 0) -> dict:
    """A put, as a transaction's operation."""
    request: dict[str, Any] = {"key": b64(key), "value": b64(value)}
    if lease:
        request["lease"] = str(lease)
    return {"request_put": request}


def delete_op(key: bytes | str, prefix: bool = False) -> dict:
    return {"request_delete_range": key_range(key, prefix)}


def key_range(key: bytes | str, prefix: bool = False) -> dict[str, Any]:
    """``key``, or every key starting with it (the empty prefix: every key), as etcd's
    ``key`` and ``range_end``."""
    raw = as_bytes(key)
    if not prefix:
        return {"key": b64(raw)}
    return {"key": b64(raw or b"\0"), "range_end": b64(prefix_end(raw))}


def range_op(key: bytes | str, prefix: bool = False) -> dict:
    return {"request_range": key_range(key, prefix)}


def txn_request(compares: Iterable[Compare], success: Iterable[dict], failure: Iterable[dict]) -> dict:
    return {"compare": [c.plain() for c in compares], "success": list(success), "failure": list(failure)}


@dataclass(frozen=True)
class TxnResult:
    """Whether the compares held, the revision after the transaction, and each operation's
    answer (the ``success`` ones if it succeeded, else the ``failure`` ones), unwrapped:
    a range's answer is a Range, others are their raw dict."""

    succeeded: bool
    revision: int
    responses: tuple[Any, ...]


def txn_answer(answer: dict) -> TxnResult:
    responses = answer.get("responses") or []
    if not isinstance(responses, list):
        raise malformed("responses is not a list")
    unwrapped: list[Any] = []
    for item in responses:
        if not isinstance(item, dict):
            raise malformed("a response is not an object")
        if isinstance(item.get("response_range"), dict):
            unwrapped.append(range_answer(item["response_range"]))
        else:
            unwrapped.append(next(iter(item.values()), {}))
    return TxnResult(bool(answer.get("succeeded", False)), header_revision(answer), tuple(unwrapped))


@dataclass(frozen=True)
class WatchEvent:
    """A put or delete of a watched key. A delete's ``kv`` has only the key and
    ``mod_revision`` (the revision of the delete)."""

    kind: Literal["PUT", "DELETE"]
    kv: KeyValue


@dataclass(frozen=True)
class WatchBatch:
    """One message of a watch stream: its events, the store revision, and whether etcd
    created or cancelled the watch with it (``compact_revision``: the history it no longer
    has, when cancelled for that)."""

    events: tuple[WatchEvent, ...]
    revision: int
    created: bool
    canceled: bool
    compact_revision: int
    cancel_reason: str


def watch_message(message: Any) -> WatchBatch:
    if not isinstance(message, dict):
        raise malformed("a watch message is not an object")
    if "error" in message:
        raise malformed(f"watch stream error: {message.get('error')}")
    result = message.get("result")
    if not isinstance(result, dict):
        raise malformed("a watch message has no result")
    events = result.get("events") or []
    if not isinstance(events, list):
        raise malformed("events is not a list")
    parsed = []
    for event in events:
        if not isinstance(event, dict):
            raise malformed("a watch event is not an object")
        kind = "DELETE" if event.get("type") == "DELETE" else "PUT"
        parsed.append(WatchEvent(kind, key_value(event.get("kv") or {})))
    return WatchBatch(tuple(parsed), header_revision(result), bool(result.get("created", False)),
                      bool(result.get("canceled", False)), number(result, "compact_revision"),
                      str(result.get("cancel_reason", "")))


@dataclass(frozen=True)
class Status:
    """One member's view: its id, the raft leader it knows (0: none, so no quorum), its
    version and raft term."""

    endpoint: str
    member_id: int
    leader: int
    version: str
    raft_term: int
    revision: int


def status_answer(endpoint: str, answer: dict) -> Status:
    header = answer.get("header") if isinstance(answer.get("header"), dict) else {}
    return Status(endpoint, number(header, "member_id", True), number(answer, "leader", True),
                  str(answer.get("version", "")), number(answer, "raftTerm"), number(header, "revision"))
