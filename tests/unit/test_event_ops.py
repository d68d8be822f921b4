"""The replay and snapshot operations, and reserving positions ahead (no socket, no process)."""

from __future__ import annotations

import asyncio

from typing import Any

import pytest

from gaffer.common.errors import InvalidArgument, StorageError
from gaffer.controller.instance_rows import instance_key
from gaffer.controller.eventlog import EventLog
from gaffer.controller.eventops import EventOps
from gaffer.controller.hub import RETRY_EVERY, EventHub, Positions
from gaffer.controller.position_rows import BLOCK


class FakeTemplates:
    def __init__(self, names: list[str]) -> None:
        self.templates: dict[str, Any] = {name: None for name in names}

    def template_views(self, names: list[str]) -> list[dict[str, Any]]:
        return [{"name": name} for name in names]


class FakeRows:
    """The listings a snapshot reads, as plain rows (what ``Api`` gives)."""

    def __init__(self, nodes: list[str], templates: list[str], instances: list[tuple[str, int, str]]) -> None:
        self.nodes = nodes
        self.cluster = FakeTemplates(templates)
        self.instances = instances

    def node_rows(self, names: list[str] | None = None) -> list[dict[str, Any]]:
        return [{"name": name} for name in (sorted(self.nodes) if names is None else names)]

    def instance_rows(self, name: str | None) -> list[dict[str, Any]]:
        rows = [
            {"id": f"{t}.{o}", "template": t, "ordinal": o, "node": n, "pid": None, "started_at": None}
            for t, o, n in self.instances
        ]
        return sorted(rows, key=instance_key)


def ops(log: EventLog | None = None, rows: FakeRows | None = None) -> EventOps:
    return EventOps(log or EventLog(), rows or FakeRows([], [], []))


class TestReplayArguments:
    @pytest.mark.parametrize("args, field", [
        ({"prefixes": [""]}, "since"),
        ({"since": -1, "prefixes": [""]}, "since"),
        ({"since": True, "prefixes": [""]}, "since"),
        ({"since": 0}, "prefixes"),
        ({"since": 0, "prefixes": []}, "prefixes"),
        ({"since": 0, "prefixes": [""] * 65}, "prefixes"),
        ({"since": 0, "prefixes": ["a", 7]}, "prefixes[1]"),
        ({"since": 0, "prefixes": ["x" * 257]}, "prefixes[0]"),
        ({"since": 0, "prefixes": [""], "limit": 0}, "limit"),
        ({"since": 0, "prefixes": [""], "limit": 10_001}, "limit"),
    ])
    async def test_bad_arguments_name_the_field(self, args, field):
        """Each malformed argument is refused with an error naming it."""
        with pytest.raises(InvalidArgument) as refused:
            await ops().replay(args)
        assert refused.value.argument == field

    async def test_replay_answers_from_the_log(self):
        """The op's result is the log's answer, on the wire."""
        log = EventLog()
        log.append("proc.a.spawn", 1.0, {})
        log.append("node.n.up", 2.0, {})
        got = await ops(log).replay({"since": 0, "prefixes": ["node."]})
        assert got == {
            "events": [{"seq": 2, "topic": "node.n.up", "ts": 2.0, "data": {}}],
            "upto": 2, "last": 2, "horizon": 0, "too_old": False,
        }


class TestSnapshot:
    async def read_all(self, op: EventOps, limit: int, between=lambda: None) -> list[dict[str, Any]]:
        pages = [await op.snapshot({"limit": limit})]
        for _ in range(20):
            token = pages[-1]["continue"]
            if token is None:
                break
            between()
            pages.append(await op.snapshot({"limit": limit, "continue": token}))
        assert pages[-1]["continue"] is None
        assert len({page["position"] for page in pages}) == 1
        return pages

    async def test_pages_cover_nodes_templates_and_instances_in_order(self):
        """Small pages list every node, template and instance once, in that order."""
        rows = FakeRows(["n2", "n1", "n3"], ["web", "db"], [("web", 1, "n1"), ("web", 10, "n2"), ("db", 2, "n1")])
        pages = await self.read_all(ops(rows=rows), limit=2)
        items = [(item["kind"], item["data"].get("name") or item["data"]["id"]) for page in pages for item in page["items"]]
        assert items == [
            ("node", "n1"), ("node", "n2"), ("node", "n3"), ("template", "db"), ("template", "web"),
            ("instance", "db.2"), ("instance", "web.1"), ("instance", "web.10"),
        ]
        assert all(len(page["items"]) <= 2 for page in pages)

    async def test_every_page_carries_the_first_pages_position(self):
        """Events published between pages do not change the snapshot's position."""
        log = EventLog()
        log.append("a", 0.0, {})
        rows = FakeRows(["n1", "n2", "n3"], ["t"], [])
        pages = await self.read_all(ops(log, rows), limit=1, between=lambda: log.append("b", 0.0, {}))
        assert pages[0]["position"] == 1 and log.last > 1

    async def test_instance_rows_get_the_ps_fields(self):
        """Instance rows carry port, cpu, mem and uptime as ps rows do (samples null)."""
        rows = FakeRows([], [], [("web", 1, "n1")])
        page = await ops(rows=rows).snapshot({})
        data = page["items"][0]["data"]
        assert {"port", "cpu", "mem", "uptime"} <= set(data) and data["cpu"] is None

    @pytest.mark.parametrize("args", [{"limit": 0}, {"limit": "5"}, {"continue": "???"}, {"limit": 5, "continue": "WzEsOSxbXV0="}])
    async def test_bad_arguments_are_refused(self, args):
        """A bad limit or a token that is not a snapshot's is refused, naming the argument."""
        with pytest.raises(InvalidArgument):
            await ops().snapshot(args)


class TestPositions:
    async def test_reserves_the_next_block_halfway_through(self):
        """The next block is reserved once half of the current one is used, not before."""
        calls = []

        async def reserve() -> int:
            calls.append(1)
            return 2 * BLOCK

        positions = Positions(BLOCK, reserve)
        positions.used(BLOCK // 2 - 1)
        await positions.settled()
        assert not calls
        positions.used(BLOCK // 2)
        await positions.settled()
        assert calls and positions.reserved == 2 * BLOCK
        positions.used(BLOCK // 2 + 1)
        await positions.settled()
        assert len(calls) == 1

    async def test_a_refusing_store_is_tried_again_later(self):
        """A refused reservation is retried after RETRY_EVERY positions, then succeeds."""
        answers: list[Any] = [StorageError("disk full", "disk_full"), 2 * BLOCK]

        async def reserve() -> int:
            answer = answers.pop(0)
            if isinstance(answer, Exception):
                raise answer
            return answer

        positions = Positions(BLOCK, reserve)
        positions.used(BLOCK // 2)
        await positions.settled()
        assert positions.reserved == BLOCK
        positions.used(BLOCK // 2 + RETRY_EVERY - 1)
        await positions.settled()
        assert len(answers) == 1
        positions.used(BLOCK // 2 + RETRY_EVERY)
        await positions.settled()
        assert positions.reserved == 2 * BLOCK and not answers

    async def test_numbering_goes_on_while_a_reservation_waits_for_the_store(self):
        """Publishing never waits for the store: positions are numbered while a reservation
        is under way, and only one reservation runs at a time."""
        started, release = asyncio.Event(), asyncio.Event()
        calls = []

        async def reserve() -> int:
            calls.append(1)
            started.set()
            await release.wait()
            return 2 * BLOCK

        positions = Positions(BLOCK, reserve)
        hub = EventHub(None, events=EventLog(first=BLOCK // 2, horizon=0, capacity=8), positions=positions)
        seqs = [hub.publish("a", {}) for _ in range(3)]
        await started.wait()
        seqs.append(hub.publish("a", {}))
        assert seqs == [BLOCK // 2 + i for i in range(4)] and calls == [1]
        assert positions.reserved == BLOCK
        release.set()
        await positions.settled()
        assert positions.reserved == 2 * BLOCK
        await hub.stop()

    def test_hub_numbers_with_its_log_and_reports_status(self):
        """The hub's positions come from its log; status has the contract's figures."""
        hub = EventHub(None, events=EventLog(first=BLOCK + 1, horizon=9, capacity=2))
        assert [hub.publish("a", {}) for _ in range(3)] == [BLOCK + 1, BLOCK + 2, BLOCK + 3]
        assert hub.seq == BLOCK + 3
        assert hub.status() == {
            "position": BLOCK + 3, "horizon": BLOCK + 1, "buffered": 2, "buffer": 2, "dropped_subscribers": 0,
        }
