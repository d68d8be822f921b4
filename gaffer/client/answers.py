"""The controller's answers to ``replay`` and ``snapshot``, checked before the client acts on them.

Replies travel as plain ``result`` values that the envelope's schema does not look into, so the
resuming client checks the two answers it builds its stream from, field by field, and turns a
malformed one into a ProtocolError naming the field (never a KeyError deep in the stream).
"""

from __future__ import annotations

from typing import Any

from gaffer.common import schema as s
from gaffer.common.errors import ProtocolError
from gaffer.common.protocol import BAD_BODY, MAX_CONTAINER, MAX_EVENTS, MAX_INT

MAX_PREV = 64
"""Entries of an event's ``prev`` (and prefixes of a ``replay``): the contract's bound."""

_COUNTER = s.integer(0, MAX_INT)
_EVENT = s.struct(
    {"seq": s.integer(1, MAX_INT), "topic": s.string(256, 1), "ts": s.number(0.0),
     "data": s.plain_map(MAX_CONTAINER)},
    optional={"prev": s.map_of(s.string(256), _COUNTER, MAX_PREV)},
)


def _replay_consistent(answer: Any) -> None:
    seqs = [event["seq"] for event in answer["events"]]
    if any(a >= b for a, b in zip(seqs, seqs[1:])):
        raise s.Invalid("events must be in ascending positions")
    if seqs and seqs[-1] > answer["upto"]:
        raise s.Invalid("an event lies after upto")
    if answer["upto"] > answer["last"]:
        raise s.Invalid("upto must not pass last")
    if answer["too_old"] and seqs:
        raise s.Invalid("a too_old answer carries no events")


_REPLAY = s.struct(
    {"events": s.list_of(_EVENT, MAX_EVENTS), "upto": _COUNTER, "last": _COUNTER,
     "horizon": _COUNTER, "too_old": s.boolean()},
    post=_replay_consistent,
)
_SNAPSHOT = s.struct({
    "position": _COUNTER,
    "items": s.list_of(
        s.struct({"kind": s.one_of(("node", "template", "instance")), "data": s.plain_map(MAX_CONTAINER)}),
        MAX_CONTAINER,
    ),
    "continue": s.nullable(s.string(4096, 1)),
})


def check_replay(answer: Any, since: int) -> dict[str, Any]:
    """A ``replay`` answer fit to act on (ProtocolError otherwise): events after ``since`` only,
    and a ``too_old`` answer's horizon past ``since``. ``upto`` may be below ``since``: the
    caller asked from a position the controller has not reached."""
    _check("replay", _REPLAY, answer)
    if answer["events"] and answer["events"][0]["seq"] <= since:
        raise ProtocolError(BAD_BODY, f"replay.events[0].seq: must be after since {since}", "replay")
    if answer["too_old"] and answer["horizon"] <= since:
        raise ProtocolError(BAD_BODY, f"replay.horizon: too_old needs a horizon after since {since}", "replay")
    return answer


def check_snapshot(page: Any) -> dict[str, Any]:
    """A ``snapshot`` page fit to act on (ProtocolError otherwise)."""
    _check("snapshot", _SNAPSHOT, page)
    return page


def _check(op: str, check: s.Check, value: Any) -> None:
    try:
        check(value)
    except s.Invalid as exc:
        raise ProtocolError(BAD_BODY, f"the controller's {op} answer{exc.where()}: {exc.message}", op) from None
