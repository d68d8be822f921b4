"""The wire protocol: every kind round-trips, every bad frame is refused with its reason."""

from __future__ import annotations

import logging
import math
import os

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gaffer.agent.lifecycle import LIFECYCLE, State
from gaffer.common import protocol
from gaffer.common import schema as s
from gaffer.common.badmsg import BadMessages
from gaffer.common.errors import (
    GafferError,
    InstanceNotFound,
    Problem,
    ProtocolError,
    TemplateError,
)
from gaffer.common.protocol import (
    AGENT_TO_CONTROLLER,
    CLIENT_TO_CONTROLLER,
    CONTROLLER_TO_AGENT,
    CONTROLLER_TO_CLIENT,
    KINDS,
    MAX_CONTAINER,
    MAX_INT,
    MAX_MESSAGE,
    PROTOCOL_VERSION,
    PUBLISHED,
    REASONS,
    Message,
    decode,
    encode,
    instances_digest,
    validate,
)
from budget import examples

RANDOM = settings(max_examples=40, deadline=None)
FUZZ = settings(max_examples=examples(300), deadline=None)
ROLES = (
    AGENT_TO_CONTROLLER, CONTROLLER_TO_AGENT, CLIENT_TO_CONTROLLER, CONTROLLER_TO_CLIENT, PUBLISHED
)


def role_of(kind: str) -> frozenset[str]:
    return next(role for role in ROLES if kind in role)


# ---------------------------------------------------------------- valid bodies

names = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_-]{0,63}\Z")
label_keys = st.from_regex(r"\A[A-Za-z0-9]([A-Za-z0-9_./-]{0,62}[A-Za-z0-9])?\Z")
words = st.text(min_size=1, max_size=64)
counters = st.integers(0, MAX_INT)
topics = st.text(min_size=1, max_size=256)
times = st.floats(min_value=0, allow_nan=False, allow_infinity=False) | st.integers(0, 2**53)
plain = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False) | st.text(max_size=20) | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
plain_maps = st.dictionaries(st.text(max_size=10), plain, max_size=5)
instances = st.fixed_dictionaries({
    "id": st.text(min_size=1, max_size=129),
    "template": names,
    "ordinal": st.integers(1, MAX_INT) | words,
    "pid": st.none() | st.integers(1, 2**31 - 1),
    "state": st.sampled_from(protocol.INSTANCE_STATES),
    "restarts": counters,
    "started_at": st.none() | times,
    "spec": st.none() | words,
    "ready": st.booleans(),
}, optional={"exit_code": st.integers(0, 255)})
problems = st.fixed_dictionaries(
    {"where": st.text(max_size=20), "field": st.text(max_size=20), "message": st.text(max_size=40)}
)
errors = st.fixed_dictionaries(
    {"code": words, "message": st.text(max_size=100)},
    optional={
        "problems": st.lists(problems, max_size=3),
        "details": st.dictionaries(
            st.text(min_size=1, max_size=10), st.none() | st.text(max_size=20) | st.integers(-100, 100),
            max_size=3,
        ),
    },
)


@st.composite
def batches(draw: st.DrawFn) -> dict:
    """A ``batch`` body: positions ascending past ``prev``."""
    seq = prev = draw(st.integers(0, 2**40))
    events = []
    for gap in draw(st.lists(st.integers(1, 1_000), min_size=1, max_size=4)):
        seq += gap
        events.append([seq, draw(topics), draw(times), draw(plain_maps)])
    return {"prev": prev, "events": events}


@st.composite
def outcomes(draw: st.DrawFn) -> dict:
    ok = draw(st.booleans())
    return {
        "id": draw(counters),
        "ok": ok,
        "result": draw(plain) if ok else None,
        "error": None if ok else draw(errors),
    }


@st.composite
def assignments(draw: st.DrawFn) -> dict:
    templates = draw(st.dictionaries(names, plain_maps, max_size=4))
    chosen = draw(st.lists(st.sampled_from(sorted(templates)), unique=True)) if templates else []
    ordinals = {
        name: draw(st.lists(st.integers(1, MAX_INT), max_size=5)) for name in chosen
    }
    controls = {
        name: {"count": len(ordinals.get(name, ())), "allowance": draw(st.integers(1, 10)),
               "restart": draw(counters)}
        for name in templates
    }
    return {"generation": draw(counters), "templates": templates, "ordinals": ordinals, "controls": controls}


hosts = st.fixed_dictionaries({
    "tracking": st.sampled_from(["cgroup", "subreaper"]),
    "keeper": st.sampled_from(["running", "restarting", "off"]),
})

BODIES = {
    "hello": st.fixed_dictionaries({
        "node": names,
        "labels": st.dictionaries(label_keys, st.text(max_size=256), max_size=4),
        "cpus": st.integers(1, 65_536),
        "memory": counters,
        "version": words,
        "protocol": st.integers(1, 65_535),
        "agent_id": words,
        "incarnation": words,
        "generation": counters,
        "instances": st.lists(instances, max_size=5),
    }, optional={"host": hosts}),
    "heartbeat": st.fixed_dictionaries({
        "load": st.lists(times, min_size=3, max_size=3),
        "digest": st.text(max_size=128),
        "instances": counters,
        "generation": counters,
    }, optional={"host": hosts, "dropped": st.dictionaries(words, counters, max_size=2)}),
    "report": st.fixed_dictionaries({
        "instances": st.lists(instances, max_size=5),
        "removed": st.lists(st.text(min_size=1, max_size=20), max_size=3),
        "full": st.booleans(),
    }),
    "stats": st.fixed_dictionaries({
        "rows": st.lists(st.fixed_dictionaries({
            "id": st.text(min_size=1, max_size=20),
            "pid": st.integers(1, 2**31 - 1),
            "cpu": st.floats(0.0, 6_553_600.0),
            "mem": counters,
            "children": st.integers(0, 131_072),
        }), max_size=4),
        "removed": st.lists(st.text(min_size=1, max_size=20), max_size=3),
        "reset": st.booleans(),
    }),
    "events": st.fixed_dictionaries({
        "events": st.lists(
            st.fixed_dictionaries({"seq": counters, "topic": topics, "ts": times, "data": plain_maps}),
            max_size=4,
        ),
    }, optional={"lost": counters}),
    "ack": st.fixed_dictionaries({
        "generation": counters,
        "ok": st.booleans(),
        "errors": st.lists(
            st.fixed_dictionaries({"template": names, "code": words, "message": st.text(max_size=50)}),
            max_size=4,
        ),
    }),
    "result": outcomes(),
    "pong": st.fixed_dictionaries({"nonce": counters}),
    "welcome": st.fixed_dictionaries({
        "node": names,
        "controller": words,
        "heartbeat": st.floats(0.001, 3_600),
        "timeout": st.floats(0.001, 86_400),
        "events_upto": counters,
    }),
    "events_ack": st.fixed_dictionaries({"upto": counters}),
    "refuse": st.fixed_dictionaries({"code": words, "message": st.text(max_size=100)}),
    "beat": st.fixed_dictionaries({"generation": counters}),
    "assign": assignments(),
    "command": st.fixed_dictionaries({"id": counters, "op": words, "args": plain_maps}),
    "ping": st.fixed_dictionaries({"nonce": counters}),
    "request": st.fixed_dictionaries({"id": counters, "op": words, "args": plain_maps}),
    "reply": outcomes(),
    "event": st.fixed_dictionaries(
        {"seq": counters, "topic": topics, "ts": times, "data": plain_maps}
    ),
    "batch": batches(),
}

INSTANCE = {
    "id": "web.1", "template": "web", "ordinal": 1, "pid": 4242, "state": "running",
    "restarts": 0, "started_at": 1700000000.5, "spec": "0123456789abcdef", "ready": True,
}
HEARTBEAT = {"load": [0.5, 0.25, 0.0], "digest": "", "instances": 0, "generation": 0}
EVENT = {"seq": 1, "topic": "t", "ts": 1.0, "data": {}}
REQUEST = {"id": 1, "op": "x", "args": {}}
FAILED = {"id": 1, "ok": False, "result": None, "error": {"code": "x", "message": "y"}}
ASSIGN = {
    "generation": 1, "templates": {"web": {}}, "ordinals": {"web": [1]},
    "controls": {"web": {"count": 1, "allowance": 1, "restart": 0}},
}
HELLO = {
    "node": "node-1", "labels": {"zone": "a"}, "cpus": 4, "memory": 2**33, "version": "0.1.0",
    "protocol": 1, "agent_id": "a1b2", "incarnation": "f00d", "generation": 0, "instances": [INSTANCE],
}


def frame(*envelope: object) -> bytes:
    return msgpack.packb(list(envelope), use_bin_type=True)


def body_frame(kind: str, body: object) -> bytes:
    return frame(PROTOCOL_VERSION, kind, 1, body)


def refusal(data: bytes, allowed: frozenset[str] | None = None) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        decode(data, allowed)
    return info.value


class TestKinds:
    def test_every_kind_belongs_to_exactly_one_role(self):
        """The role sets partition the kinds, so a kind always says who may send it."""
        assert sorted(k for role in ROLES for k in role) == sorted(KINDS)

    def test_instance_states_are_the_lifecycle_states(self):
        """The wire's list of states cannot drift from the agent's state machine."""
        assert protocol.INSTANCE_STATES == tuple(state.value for state in LIFECYCLE)

    def test_every_kind_has_a_body_strategy(self):
        """The round-trip property below covers every kind there is."""
        assert set(BODIES) == KINDS


class TestRoundTrip:
    @pytest.mark.parametrize("kind", sorted(KINDS))
    @RANDOM
    @given(data=st.data())
    def test_valid_body_decodes_to_what_was_encoded(self, kind, data):
        """encode then decode gives back the same kind, seq and body, for every kind."""
        body = data.draw(BODIES[kind])
        seq = data.draw(counters)
        message = decode(encode(kind, seq, body), role_of(kind))
        assert message == Message(PROTOCOL_VERSION, kind, seq, body)

    def test_tuples_are_accepted_when_encoding_and_arrive_as_lists(self):
        """Senders may pass os.getloadavg() as it is; receivers always see lists."""
        body = {**HEARTBEAT, "load": (0.5, 0.25, 0.0)}
        assert decode(encode("heartbeat", 1, body)).body["load"] == [0.5, 0.25, 0.0]

    def test_any_bytes_like_frame_decodes(self):
        """The socket layer may hand over a memoryview or a zmq.Frame without copying."""
        data = encode("ping", 3, {"nonce": 9})
        assert decode(memoryview(data)) == decode(bytearray(data)) == decode(data)

    def test_no_role_filter_accepts_any_known_kind(self):
        """allowed=None is for tools and tests that read every kind."""
        assert decode(encode("ping", 3, {"nonce": 9})) == Message(PROTOCOL_VERSION, "ping", 3, {"nonce": 9})

    def test_every_gaffer_error_fits_the_error_schema(self):
        """A reply can carry any GafferError's to_dict(), template problems included."""
        errors = [
            GafferError("boom"),
            InstanceNotFound("web.3"),
            ProtocolError("bad_body", "hello.cpus: is required"),
            TemplateError([Problem("web", "cmd", "is required"), Problem("db", "", "bad")]),
        ]
        for error in errors:
            body = {"id": 1, "ok": False, "result": None, "error": error.to_dict()}
            assert decode(encode("reply", 1, body)).body["error"] == error.to_dict()


class TestDigest:
    def test_digest_ignores_order(self):
        """The agent and the controller may hold instances in any order."""
        other = {**INSTANCE, "id": "web.2", "ordinal": 2, "pid": 4243}
        assert instances_digest([INSTANCE, other]) == instances_digest([other, INSTANCE])

    @pytest.mark.parametrize(
        "change", [{"state": "stopping"}, {"pid": None}, {"spec": "feed"}, {"id": "web.9"}]
    )
    def test_digest_changes_with_what_the_controller_tracks(self, change):
        """A new state, pid, spec or id is a different table."""
        assert instances_digest([INSTANCE]) != instances_digest([{**INSTANCE, **change}])

    def test_digest_fits_the_heartbeat(self):
        """The digest is a valid heartbeat.digest, even for an empty table."""
        for table in ([], [INSTANCE]):
            validate("heartbeat", {**HEARTBEAT, "digest": instances_digest(table)})


# ---------------------------------------------------------------- bad frames

GOOD_PING = encode("ping", 1, {"nonce": 1})
DEEP: object = 1
for _ in range(40):
    DEEP = [DEEP]

# (id, frame, allowed, reason, message or None)
BAD_FRAMES = [
    ("unused-byte", b"\xc1", None, "not_msgpack", None),
    ("empty", b"", None, "not_msgpack", None),
    ("truncated", GOOD_PING[:-2], None, "not_msgpack", None),
    ("trailing-bytes", GOOD_PING + b"\x00", None, "not_msgpack", None),
    ("bad-utf8", b"\x94\x01\xa2\xff\xfe\x01\x80", None, "not_msgpack", None),
    ("int-map-key", frame(PROTOCOL_VERSION, "ping", 1, {1: 2}), None, "not_msgpack", None),
    ("ext-type", frame(PROTOCOL_VERSION, "ping", 1, msgpack.ExtType(7, b"xyz")), None, "not_msgpack",
     "cannot unpack: msgpack extension types are not used by this protocol"),
    ("empty-ext-type", frame(PROTOCOL_VERSION, "ping", 1, msgpack.ExtType(7, b"")), None, "not_msgpack",
     "cannot unpack: msgpack extension type 7 is not used by this protocol"),
    ("timestamp-ext", frame(PROTOCOL_VERSION, "ping", 1, msgpack.Timestamp(1, 0)), None, "not_msgpack", None),
    ("array-over-limit",
     body_frame("request", {**REQUEST, "args": {"a": [0] * (MAX_CONTAINER + 1)}}),
     None, "not_msgpack", None),
    ("not-an-array", msgpack.packb({"version": 1}), None, "bad_envelope",
     "the envelope must be a list, got a map of 1 entries"),
    ("empty-array", msgpack.packb([]), None, "bad_envelope", None),
    ("string-version", frame("1", "ping", 1, {"nonce": 1}), None, "bad_envelope",
     'version must be an integer, got "1"'),
    ("bool-version", frame(True, "ping", 1, {"nonce": 1}), None, "bad_envelope", None),
    ("three-items", frame(PROTOCOL_VERSION, "ping", 1), None, "bad_envelope",
     "the envelope must be [version, kind, seq, body], got 3 items"),
    ("five-items", frame(PROTOCOL_VERSION, "ping", 1, {"nonce": 1}, None), None, "bad_envelope", None),
    ("newer-version", frame(PROTOCOL_VERSION + 1, "ping", 1, {"nonce": 1}), None, "unknown_version",
     f"protocol version {PROTOCOL_VERSION + 1} (this side speaks {PROTOCOL_VERSION})"),
    ("newer-version-other-shape", frame(PROTOCOL_VERSION + 1, {"anything": "goes"}), None, "unknown_version", None),
    ("version-0", frame(0, "ping", 1, {"nonce": 1}), None, "unknown_version", None),
    ("unknown-kind", frame(PROTOCOL_VERSION, "shutdown", 1, {}), None, "unknown_kind",
     'unknown message kind "shutdown"'),
    ("kind-not-a-string", frame(PROTOCOL_VERSION, 5, 1, {}), None, "bad_envelope", None),
    ("negative-seq", frame(PROTOCOL_VERSION, "ping", -1, {"nonce": 1}), None, "bad_envelope",
     "seq must be an integer >= 0, got -1"),
    ("bool-seq", frame(PROTOCOL_VERSION, "ping", True, {"nonce": 1}), None, "bad_envelope", None),
    ("float-seq", frame(PROTOCOL_VERSION, "ping", 1.0, {"nonce": 1}), None, "bad_envelope", None),
    ("huge-seq", frame(PROTOCOL_VERSION, "ping", 2**63, {"nonce": 1}), None, "bad_envelope", None),
    ("agent-sends-assign", body_frame("assign", {}), AGENT_TO_CONTROLLER, "unexpected_kind",
     "'assign' is not accepted from this peer"),
    ("client-sends-hello", body_frame("hello", HELLO), CLIENT_TO_CONTROLLER, "unexpected_kind",
     None),
    ("agent-sends-request", body_frame("request", {}), AGENT_TO_CONTROLLER, "unexpected_kind",
     None),
    ("subscriber-gets-reply", body_frame("reply", {}), PUBLISHED, "unexpected_kind", None),
    # bodies
    ("body-not-a-map", body_frame("ping", [1]), None, "bad_body",
     "ping: must be a map, got a list of 1 items"),
    ("missing-field", body_frame("hello", {k: v for k, v in HELLO.items() if k != "cpus"}), None,
     "bad_body", "hello.cpus: is required"),
    ("extra-field", body_frame("ping", {"nonce": 1, "extra": 2}), None, "bad_body",
     "ping.extra: unknown field"),
    ("misspelt-field", body_frame("hello", {**HELLO, "lables": {}}), None, "bad_body",
     "hello.lables: unknown field (did you mean 'labels'?)"),
    ("bytes-field-name", body_frame("ping", {"nonce": 1, b"x": 2}), None, "bad_body",
     "ping[bytes (1)]: unknown field"),
    ("wrong-type", body_frame("heartbeat", {**HEARTBEAT, "digest": 5}), None, "bad_body",
     "heartbeat.digest: must be a string of at most 128 characters, got 5"),
    ("bool-as-int", body_frame("ping", {"nonce": True}), None, "bad_body",
     "ping.nonce: must be an integer >= 0, got true"),
    ("int-as-bool", body_frame("report", {"instances": [], "removed": [], "full": 1}), None, "bad_body",
     "report.full: must be true or false, got 1"),
    ("float-as-int", body_frame("beat", {"generation": 1.0}), None, "bad_body",
     "beat.generation: must be an integer >= 0, got 1.0"),
    ("unknown-tracking-mode", body_frame("heartbeat", {**HEARTBEAT, "host": {"tracking": "magic",
     "keeper": "running"}}), None, "bad_body",
     'heartbeat.host.tracking: must be one of "cgroup", "subreaper", got "magic"'),
    ("int-out-of-range", body_frame("hello", {**HELLO, "cpus": 0}), None, "bad_body",
     "hello.cpus: must be an integer in 1..65536, got 0"),
    ("oversized-string", body_frame("hello", {**HELLO, "node": "n" * 65}), None, "bad_body", None),
    ("bad-name", body_frame("hello", {**HELLO, "node": "no.dots"}), None, "bad_body", None),
    ("oversized-label-value", body_frame("hello", {**HELLO, "labels": {"zone": "z" * 257}}), None,
     "bad_body",
     "hello.labels.zone: must be a string of at most 256 characters, got a string of 257 characters"),
    ("bad-label-key", body_frame("hello", {**HELLO, "labels": {"-zone": "a"}}), None, "bad_body",
     None),
    ("oversized-list", body_frame("ack", {"generation": 1, "ok": False, "errors": ["e"] * 1001}),
     None, "bad_body", "ack.errors: must be a list of at most 1000 items, got a list of 1001 items"),
    ("short-load", body_frame("heartbeat", {**HEARTBEAT, "load": [0, 0]}), None, "bad_body",
     "heartbeat.load: must be a list of exactly 3 items, got a list of 2 items"),
    ("nan", body_frame("event", {**EVENT, "ts": math.nan}), None, "bad_body",
     "event.ts: must be a finite number >= 0, got nan"),
    ("infinity", body_frame("event", {**EVENT, "ts": math.inf}), None, "bad_body", None),
    ("nested-path",
     body_frame("hello", {**HELLO, "instances": [INSTANCE] * 3 + [{**INSTANCE, "pid": "x"}]}),
     None, "bad_body",
     'hello.instances[3].pid: must be an integer in 1..2147483647 or null, got "x"'),
    ("bool-ordinal", body_frame("report", {"instances": [{**INSTANCE, "ordinal": True}], "removed": [], "full": True}),
     None, "bad_body", "report.instances[0].ordinal: must be an integer >= 1 or a non-empty string "
     "of at most 64 characters, got true"),
    ("unknown-state",
     body_frame("report", {"instances": [{**INSTANCE, "state": "zombie"}], "removed": [], "full": True}),
     None, "bad_body", None),
    ("ordinal-zero", body_frame("assign", {**ASSIGN, "ordinals": {"web": [0]}}), None, "bad_body",
     "assign.ordinals.web[0]: must be an integer >= 1, got 0"),
    ("ordinals-without-template",
     body_frame("assign", {**ASSIGN, "templates": {}}), None, "bad_body",
     "assign.ordinals.web: names a template missing from templates"),
    ("ok-with-error",
     body_frame("reply", {**FAILED, "ok": True}), None, "bad_body",
     "reply.error: must be null when ok is true"),
    ("failure-without-error", body_frame("result", {**FAILED, "error": None}), None, "bad_body",
     "result.error: must describe the failure when ok is false"),
    ("error-extra-field",
     body_frame("reply", {**FAILED, "error": {"code": "x", "message": "y", "z": 1}}), None,
     "bad_body", "reply.error.z: unknown field"),
    ("bytes-key-in-args", body_frame("request", {**REQUEST, "args": {"a": {b"k": 1}}}), None,
     "bad_body", "request.args.a: map keys must be strings, got bytes (1)"),
    ("too-deep", body_frame("request", {**REQUEST, "args": {"a": DEEP}}), None, "bad_body", None),
    ("data-not-a-map", body_frame("event", {**EVENT, "data": [1]}), None, "bad_body", None),
    ("empty-topic", body_frame("event", {**EVENT, "topic": ""}), None, "bad_body", None),
    ("batch-not-ascending", body_frame("batch", {"prev": 0, "events": [[2, "t", 1.0, {}], [2, "t", 1.0, {}]]}),
     None, "bad_body", "batch.events[1]: positions must ascend past prev: 2 after 2"),
    ("batch-not-after-prev", body_frame("batch", {"prev": 5, "events": [[5, "t", 1.0, {}]]}),
     None, "bad_body", "batch.events[0]: positions must ascend past prev: 5 after 5"),
    ("batch-event-field", body_frame("batch", {"prev": 0, "events": [[1, "t", 1.0, {}], [2, "", 1.0, {}]]}),
     None, "bad_body", None),
    ("batch-event-shape", body_frame("batch", {"prev": 0, "events": [[1, "t", 1.0]]}),
     None, "bad_body", "batch.events[0]: must be [seq, topic, ts, data], got a list of 3 items"),
    ("batch-empty", body_frame("batch", {"prev": 0, "events": []}), None, "bad_body", None),
    ("batch-extra", body_frame("batch", {"prev": 0, "events": [[1, "t", 1.0, {}]], "x": 1}),
     None, "bad_body", None),
]


class TestBadFrames:
    @pytest.mark.parametrize(
        "data, allowed, reason, message",
        [case[1:] for case in BAD_FRAMES],
        ids=[case[0] for case in BAD_FRAMES],
    )
    def test_bad_frame_is_refused_with_its_reason(self, data, allowed, reason, message):
        """Each kind of bad frame maps to one machine reason and a message naming the field."""
        error = refusal(data, allowed)
        assert error.reason == reason
        assert error.code == "protocol_error"
        if message is not None:
            assert error.message == message

    def test_every_reason_is_exercised(self):
        """The table above reaches every reason decode can give (too_large is tested below)."""
        assert {case[3] for case in BAD_FRAMES} | {"too_large"} == set(REASONS)

    def test_body_error_names_the_kind(self):
        """The kind travels with a body error so drop counts can be split by kind."""
        assert refusal(body_frame("ping", {})).kind == "ping"


class TestSizeLimit:
    def test_frame_over_the_limit_is_refused_before_unpacking(self):
        """Bytes that are not msgpack at all still say too_large: the unpacker never saw them."""
        error = refusal(b"\xc1" * (MAX_MESSAGE + 1))
        assert error.reason == "too_large"

    def test_valid_message_over_the_limit_is_refused(self):
        """A well-formed message is refused too once it is over MAX_MESSAGE."""
        data = body_frame("request", {**REQUEST, "args": {"pad": "x" * MAX_MESSAGE}})
        assert refusal(data).reason == "too_large"

    def test_message_of_exactly_the_limit_is_accepted(self):
        """The limit is inclusive."""
        base = len(encode("request", 1, {"id": 1, "op": "x", "args": {"pad": ""}}))
        pad = MAX_MESSAGE - base - 4  # the empty pad has a 1-byte header, a str32 a 5-byte one
        data = encode("request", 1, {"id": 1, "op": "x", "args": {"pad": "x" * pad}})
        assert len(data) == MAX_MESSAGE
        assert decode(data).body["args"]["pad"] == "x" * pad

    def test_encode_refuses_to_build_an_oversized_frame(self):
        """The sender finds out, not the receiver."""
        with pytest.raises(ProtocolError) as info:
            encode("request", 1, {"id": 1, "op": "x", "args": {"pad": b"x" * MAX_MESSAGE}})
        assert info.value.reason == "too_large"


class TestEncode:
    def test_encode_checks_the_body(self):
        """A bug on the sending side fails loudly, naming the field."""
        with pytest.raises(ProtocolError) as info:
            encode("hello", 1, {**HELLO, "cpus": "4"})
        assert info.value.reason == "bad_body"
        assert info.value.message == 'hello.cpus: must be an integer in 1..65536, got "4"'

    def test_an_instance_row_may_carry_an_exit_code_of_0_to_255(self):
        """exit_code (what depends_on's completed reads) is optional and bounded like a status."""
        row = {**INSTANCE, "state": "exited", "pid": None, "exit_code": 0}
        encode("report", 1, {"instances": [row], "removed": [], "full": True})
        with pytest.raises(ProtocolError) as info:
            encode("report", 1, {"instances": [{**row, "exit_code": 256}], "removed": [], "full": True})
        assert "exit_code" in info.value.message

    def test_encode_refuses_an_unknown_kind(self):
        """There is no way to put an unknown kind on the wire."""
        with pytest.raises(ProtocolError) as info:
            encode("shutdown", 1, {})
        assert info.value.reason == "unknown_kind"

    @pytest.mark.parametrize("seq", [-1, True, 1.5, 2**63, None])
    def test_encode_refuses_a_bad_seq(self, seq):
        """seq is a non-negative int below 2**63."""
        with pytest.raises(ProtocolError) as info:
            encode("ping", seq, {"nonce": 1})
        assert info.value.reason == "bad_envelope"

    def test_encode_refuses_values_that_are_not_plain_data(self):
        """A set in a result would not survive the trip: it is refused before packing."""
        body = {"id": 1, "ok": True, "result": {"ids": {1, 2}}, "error": None}
        with pytest.raises(ProtocolError) as info:
            encode("reply", 1, body)
        assert info.value.message.startswith("reply.result.ids: must be plain data")

    def test_encode_refuses_integers_msgpack_cannot_carry(self):
        """An int beyond 64 bits is a bad body, not an OverflowError out of the sender."""
        body = {"id": 1, "ok": True, "result": [2**70], "error": None}
        with pytest.raises(ProtocolError) as info:
            encode("reply", 1, body)
        assert info.value.reason == "bad_body"

    def test_validate_accepts_exactly_what_encode_accepts(self):
        """validate is the same check, for callers that build bodies without sending them."""
        validate("hello", HELLO)
        with pytest.raises(ProtocolError):
            validate("hello", {**HELLO, "generation": -1})


# ---------------------------------------------------------------- fuzz

msgpack_ints = st.integers(-(2**63), 2**64 - 1)
msgpack_values = st.recursive(
    st.none() | st.booleans() | msgpack_ints | st.floats()
    | st.text(max_size=12) | st.binary(max_size=12),
    lambda inner: st.lists(inner, max_size=5)
    | st.dictionaries(
        st.text(max_size=8) | msgpack_ints | st.binary(max_size=4), inner, max_size=5
    ),
    max_leaves=20,
)
envelopes = st.tuples(
    st.sampled_from([PROTOCOL_VERSION] * 3 + [0, PROTOCOL_VERSION + 1]) | msgpack_values,
    st.sampled_from(sorted(KINDS)) | msgpack_values,
    counters | msgpack_values,
    st.sampled_from([HELLO, {"nonce": 1}, {}]) | msgpack_values,
).map(list)
allowed_sets = st.sampled_from([None, *ROLES])


def decodes_or_refuses(data: bytes, allowed: frozenset[str] | None) -> None:
    try:
        message = decode(data, allowed)
    except ProtocolError as error:
        assert error.reason in REASONS
        return
    validate(message.kind, message.body)
    assert allowed is None or message.kind in allowed


def paths(value: object, prefix: tuple = ()) -> list[tuple]:
    """Every place inside a body that a mutation can hit: dict keys and list indices."""
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found.extend(paths(item, (*prefix, key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found.extend(paths(item, (*prefix, index)))
    return found


def replaced(value: object, path: tuple, new: object) -> object:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {**value, head: replaced(value[head], rest, new)}
    copy = list(value)  # type: ignore[call-overload]
    copy[head] = replaced(copy[head], rest, new)
    return copy


class TestFuzz:
    @FUZZ
    @given(data=st.binary(max_size=300), allowed=allowed_sets)
    def test_arbitrary_bytes_decode_or_refuse(self, data, allowed):
        """Random bytes give a valid Message or a ProtocolError, never another exception."""
        decodes_or_refuses(data, allowed)

    @FUZZ
    @given(value=msgpack_values | envelopes, allowed=allowed_sets)
    def test_arbitrary_msgpack_values_decode_or_refuse(self, value, allowed):
        """Any msgpack value, envelope-shaped or not, decodes to a valid Message or is refused."""
        decodes_or_refuses(msgpack.packb(value, use_bin_type=True), allowed)

    @FUZZ
    @given(
        kind=st.sampled_from(sorted(KINDS)),
        cuts=st.lists(
            st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=4
        ),
        data=st.data(),
    )
    def test_corrupted_valid_frames_decode_or_refuse(self, kind, cuts, data):
        """Flipping bytes of a good frame never gets past decode as anything but a valid Message."""
        good = bytearray(encode(kind, 1, data.draw(BODIES[kind])))
        for position, byte in cuts:
            good[position % len(good)] = byte
        decodes_or_refuses(bytes(good), role_of(kind))

    @pytest.mark.parametrize("kind", sorted(KINDS))
    @settings(max_examples=examples(150), deadline=None)
    @given(new=msgpack_values, data=st.data())
    def test_valid_bodies_with_one_part_replaced_decode_or_refuse(self, kind, new, data):
        """Swapping any one field, item or key's value for random data never escapes decode."""
        body = data.draw(BODIES[kind])
        path = data.draw(st.sampled_from(paths(body)))
        mutated = replaced(body, path, new)
        decodes_or_refuses(msgpack.packb([PROTOCOL_VERSION, kind, 1, mutated], use_bin_type=True), role_of(kind))

    def test_random_frames_from_urandom_decode_or_refuse(self):
        """A larger sample of noise than hypothesis shrinks through, same property."""
        for size in range(1, 2_000, 7):
            decodes_or_refuses(os.urandom(size), None)


# ---------------------------------------------------------------- drop accounting

class TestBadMessages:
    def test_first_drop_per_peer_and_reason_is_a_warning_later_ones_debug(self, caplog):
        """One bad peer cannot flood the log: its second drop for a reason is DEBUG only."""
        caplog.set_level(logging.DEBUG, logger="gaffer.protocol")
        bad = BadMessages()
        bad.record("node-1", "bad_body", "hello.cpus: is required")
        bad.record("node-1", "bad_body", "hello.cpus: is required")
        bad.record("node-1", "not_msgpack", "not a msgpack message")
        bad.record("node-2", "bad_body", "ping.nonce: is required")
        levels = [(r.levelno, r.getMessage().split(":")[0]) for r in caplog.records]
        assert levels == [
            (logging.WARNING, "dropped a message from 'node-1'"),
            (logging.DEBUG, "dropped a message from 'node-1'"),
            (logging.WARNING, "dropped a message from 'node-1'"),
            (logging.WARNING, "dropped a message from 'node-2'"),
        ]
        assert "bad_body: hello.cpus: is required" in caplog.records[0].getMessage()

    def test_every_drop_is_counted(self):
        """Counts per reason and per peer add up to the total, logged or not."""
        bad = BadMessages()
        for _ in range(5):
            bad.record("node-1", "bad_body", "x")
        bad.record("node-2", "too_large", "y")
        assert bad.snapshot() == {
            "total": 6,
            "reasons": {"bad_body": 5, "too_large": 1},
            "peers": {"node-1": {"bad_body": 5}, "node-2": {"too_large": 1}},
            "peers_evicted": 0,
        }

    def test_least_recently_seen_peer_is_evicted(self):
        """The per-peer table is bounded; totals still count every drop."""
        bad = BadMessages(max_peers=2)
        bad.record("a", "bad_body", "x")
        bad.record("b", "bad_body", "x")
        bad.record("a", "bad_body", "x")
        bad.record("c", "bad_body", "x")
        snapshot = bad.snapshot()
        assert list(snapshot["peers"]) == ["a", "c"]
        assert (snapshot["total"], snapshot["peers_evicted"]) == (4, 1)

    def test_evicted_peer_is_logged_again_when_it_returns(self, caplog):
        """Forgetting a peer forgets that it was logged: it gets one WARNING again."""
        caplog.set_level(logging.DEBUG, logger="gaffer.protocol")
        bad = BadMessages(max_peers=1)
        bad.record("a", "bad_body", "x")
        bad.record("b", "bad_body", "x")
        bad.record("a", "bad_body", "x")
        assert [r.levelno for r in caplog.records] == [logging.WARNING] * 3

    def test_record_error_takes_reason_and_message_from_decode(self, caplog):
        """The receive loop hands over the ProtocolError as it is."""
        caplog.set_level(logging.WARNING, logger="gaffer.protocol")
        bad = BadMessages()
        bad.record_error("client-7", refusal(b"\xc1"))
        assert bad.snapshot()["peers"] == {"client-7": {"not_msgpack": 1}}
        assert "not_msgpack: cannot unpack" in caplog.text

    def test_long_detail_is_truncated_in_the_log(self, caplog):
        """A huge detail string cannot bloat the log line."""
        caplog.set_level(logging.WARNING, logger="gaffer.protocol")
        BadMessages().record("a", "bad_body", "x" * 10_000)
        assert len(caplog.records[0].getMessage()) < 1_000

    def test_max_peers_must_be_positive(self):
        """A table that can hold nobody is a configuration mistake."""
        with pytest.raises(ValueError):
            BadMessages(max_peers=0)


_EVENT_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**64), 2**64), st.floats(allow_nan=True),
    st.text(max_size=3), st.binary(max_size=3), st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
)
_EVENT_BODIES = st.dictionaries(
    st.one_of(st.sampled_from(["seq", "topic", "ts", "data", "prev", "other"]), st.binary(max_size=2)),
    st.one_of(
        _EVENT_VALUES,
        st.dictionaries(st.one_of(st.text(max_size=3), st.integers(0, 3)), _EVENT_VALUES, max_size=4),
    ),
    max_size=6,
)


@settings(max_examples=examples(400))
@given(st.one_of(
    _EVENT_BODIES,
    st.fixed_dictionaries(
        {"seq": st.integers(-1, 2**64), "topic": st.text(max_size=300), "ts": st.floats(allow_nan=True),
         "data": st.dictionaries(st.text(max_size=3), _EVENT_VALUES, max_size=4)},
        optional={"prev": st.dictionaries(st.text(max_size=3), st.integers(-1, 2**64), max_size=3)},
    ),
))
def test_the_event_fast_check_accepts_exactly_what_the_event_schema_accepts(body):
    """The inline check subscribers run on every event never lets through a body the `event`
    schema refuses, and refuses with the schema's own message."""
    def outcome(check):
        try:
            check(body)
        except Exception as exc:  # noqa: BLE001 - comparing how two checks fail
            return type(exc).__name__, str(exc)
        return None

    assert outcome(protocol._check_event) == outcome(protocol._EVENT_SCHEMA)


@settings(max_examples=examples(300))
@given(
    st.integers(-1, 2**64),
    st.lists(st.one_of(
        st.tuples(st.integers(-1, 2**64), st.text(max_size=300), st.floats(allow_nan=True),
                  st.dictionaries(st.text(max_size=3), _EVENT_VALUES, max_size=4)).map(list),
        _EVENT_VALUES,
    ), max_size=4),
)
def test_the_batch_check_refuses_exactly_bad_events_and_positions_that_do_not_ascend(prev, events):
    """A batch passes only when prev is a position, every event fits the `event` schema as
    [seq, topic, ts, data], and positions ascend past prev; the refusal names the event."""
    def fits(event):
        if not (isinstance(event, list) and len(event) == 4):
            return False
        try:
            protocol._EVENT_SCHEMA(dict(zip(("seq", "topic", "ts", "data"), event)))
        except Exception:  # noqa: BLE001 - the schema's verdict is what is compared
            return False
        return True

    seqs = [e[0] for e in events if isinstance(e, list) and e and isinstance(e[0], int)]
    good = (0 <= prev <= MAX_INT and 1 <= len(events) and all(fits(e) for e in events)
            and all(a < b for a, b in zip([prev, *seqs], seqs)))
    try:
        protocol._check_batch({"prev": prev, "events": events})
    except s.Invalid as exc:
        assert not good, exc
        assert exc.where().startswith((".events", ".prev")) or not events
    else:
        assert good
