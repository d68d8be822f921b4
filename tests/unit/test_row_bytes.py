"""``RowBytes``: a ``ps`` answer written from rows kept encoded is, after any sequence of
changes, byte for byte the msgpack and the HTTP JSON of the rows (or page) made fresh; the
kept parts are reused while nothing changed and written again when any part of a row did;
and the reply frame carries the answer as if its rows were packed whole."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gaffer.common import protocol, schema
from gaffer.controller.http.handlers import dumps
from gaffer.controller.http.params import listing
from gaffer.controller.instance_rows import instance_key
from gaffer.controller.liveness import NodeState
from gaffer.controller.paging import decode_token, page
from gaffer.controller.row_bytes import PsAnswer, RowBytes, fast_token
from gaffer.controller.row_cache import RowCache
from tests.unit.test_row_cache import TEMPLATES, World, ops, report


def kept(world: World) -> RowBytes:
    return RowBytes(RowCache(world.cluster, world.agents, world.stats), world.cluster)


def answer(rows: RowBytes, world: World, name: str | None = None, limit: int | None = None,
           token: str | None = None) -> PsAnswer:
    after = decode_token(token) if token is not None else None
    return rows.answer(name, limit, after, world.wall, world.loop)


def assert_same(rows: RowBytes, world: World, name: str | None, limit: int | None = None) -> None:
    """Every page (or the whole listing) of ``name`` as msgpack and HTTP JSON, against the
    fresh rows paged by ``paging.page``."""
    fresh = world.fresh(name)
    if limit is None:
        got = answer(rows, world, name)
        assert got.packed() == msgpack.packb(fresh), name
        assert got.listing_json() == dumps(listing(fresh)), name
        return
    token = None
    for _ in range(len(fresh) + 1):
        want = page(fresh, instance_key, limit, decode_token(token) if token else None)
        got = answer(rows, world, name, limit, token)
        assert got.packed() == msgpack.packb(want), (name, limit, token)
        assert got.listing_json() == dumps(listing(want)), (name, limit, token)
        token = want["continue"]
        if token is None:
            return
        assert fast_token(decode_token(token))
    raise AssertionError("the pages never ended")


@settings(max_examples=100, deadline=None)
@given(st.lists(ops, max_size=20))
def test_the_written_answer_is_the_fresh_rows_encoded_after_any_changes(changes):
    """After every change of placement, reports, node states, samples, pending counts, failures,
    ports or clock, the answer (all, each template, and page by page) is the bytes of the fresh
    rows in msgpack and in HTTP's JSON."""
    world = World()
    rows = kept(world)
    for op in changes:
        world.apply(op)
        for name in (None, *TEMPLATES):
            assert_same(rows, world, name)
        assert_same(rows, world, None, limit=2)


def running(world: World) -> None:
    """web.1 and web.2 on node a, running, web.1 with a sample."""
    world.apply(("template", "web", None))
    world.apply(("place", {("web", 1): "a", ("web", 2): "a"}))
    world.apply(("replace", "a", [report("web.1", 100, "running", 500.0), report("web.2", 101, "running", 500.0)]))
    world.apply(("push", "a", [{"id": "web.1", "pid": 100, "cpu": 1.5, "mem": 10, "children": 0}], [], True))


CHANGES = {
    "state": lambda w: w.apply(("update", "a", [report("web.1", 100, "stopped", 500.0)], [])),
    "pid": lambda w: w.apply(("update", "a", [report("web.1", 102, "running", 500.0)], [])),
    "restarts": lambda w: w.apply(("update", "a", [{**report("web.1", 100, "running", 500.0), "restarts": 2}], [])),
    "ready": lambda w: w.apply(("update", "a", [{**report("web.1", 100, "running", 500.0), "ready": True}], [])),
    "stats push": lambda w: w.apply(("push", "a", [{"id": "web.1", "pid": 100, "cpu": 7.0, "mem": 99, "children": 0}],
                                     [], False)),
    "node down": lambda w: w.apply(("state", "a", NodeState.DOWN)),
    "moved": lambda w: w.apply(("place", {("web", 1): "b", ("web", 2): "a"})),
    "port": lambda w: w.apply(("template", "web", 8000)),
    "pending": lambda w: w.apply(("pending", "web", "no node fits", 3)),
}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_a_changed_row_shows_in_the_next_answer(change):
    """Listing again with nothing changed writes no kept part again and answers the same
    bytes; after a change of a row's state, pid, restarts, ready, samples, node, placement,
    PORT or the pending rows, the next answer shows it, equal to the fresh rows."""
    world = World()
    running(world)
    rows = kept(world)
    before = answer(rows, world).packed()
    encodes = rows.encodes
    assert answer(rows, world).packed() == before and answer(rows, world, "web").packed()
    assert rows.encodes == encodes
    CHANGES[change](world)
    after = answer(rows, world).packed()
    assert after != before and after == msgpack.packb(world.fresh(None))
    assert rows.encodes > encodes or change == "pending"  # pending rows are never kept


def test_the_clock_moves_age_and_uptime_without_writing_kept_parts():
    """A later listing with nothing else changed has later ages and uptimes, writes no kept
    part again, and each encoding's parts are written only once it is asked for."""
    world = World()
    running(world)
    rows = kept(world)
    first = msgpack.unpackb(answer(rows, world).packed())
    encodes = rows.encodes
    world.apply(("clock", 7.25))
    later = msgpack.unpackb(answer(rows, world).packed())
    assert rows.encodes == encodes
    assert (later[0]["age"], later[0]["uptime"]) == (first[0]["age"] + 7.25, first[0]["uptime"] + 7.25)
    answer(rows, world).listing_json()
    assert rows.encodes == encodes + 1  # the JSON parts, once
    answer(rows, world).listing_json()
    assert rows.encodes == encodes + 1


@pytest.mark.parametrize("limit", [None, 1])
def test_the_reply_frame_carries_the_answer_as_if_packed_whole(limit):
    """``protocol.encode`` of a reply whose result is a ``PsAnswer`` makes the frame of the
    same reply with the plain rows (or page), which decodes and checks as any reply."""
    world = World()
    running(world)
    world.apply(("pending", "api", "no node fits", 2))
    rows = kept(world)
    fresh = world.fresh(None)
    plain = fresh if limit is None else page(fresh, instance_key, limit, None)
    got = protocol.encode("reply", 9, {"id": 3, "ok": True, "result": answer(rows, world, limit=limit), "error": None})
    assert got == protocol.encode("reply", 9, {"id": 3, "ok": True, "result": plain, "error": None})
    assert protocol.decode(got).body["result"] == plain
    assert answer(rows, world, limit=limit).value() == plain


def test_only_tokens_of_the_ps_key_shape_are_bisected():
    """A token naming a template, an ordinal key and a node is taken by bisection; any other
    shape (which may not compare with every key) is left to ``Api.ps``."""
    assert fast_token(["web", [0, 3], "a"]) and fast_token(["web", [1, "run-1"], ""])
    for other in (["web"], ["web", [0, "3"], "a"], ["web", [1, 3], "a"], ["web", [0, True], "a"],
                  ["web", [2, 3], "a"], [1, [0, 3], "a"], ["web", [0, 3], None], ["web", [0, 3, 4], "a"]):
        assert not fast_token(other), other


scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(0, 2), st.text(max_size=2), st.binary(max_size=2))
keys = st.one_of(st.sampled_from(["id", "pid", "state"]), st.integers(0, 2), st.binary(max_size=1))
cells = st.one_of(scalars, st.lists(scalars, max_size=2), st.dictionaries(keys, scalars, max_size=2))
maps = st.dictionaries(keys, cells, max_size=4)


def verdict(value: Any) -> tuple[str, str] | None:
    try:
        schema.plain_value(value)
    except schema.Invalid as exc:
        return exc.where(), exc.message
    return None


@settings(max_examples=300, deadline=None)
@given(st.lists(maps, max_size=5))
def test_rows_checked_at_once_get_the_verdict_of_one_by_one(rows):
    """A list of maps (a listing's rows, checked in one pass) is accepted or refused exactly
    as its maps checked one by one are, the refusal naming the same place and problem."""
    want = None
    for index, row in enumerate(rows):
        problem = verdict(row)
        if problem is not None:
            want = (f"[{index}]{problem[0]}", problem[1])
            break
    assert verdict(rows) == want
