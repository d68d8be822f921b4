"""The etcd client and leader election against real etcd members (Debian's etcd-server).

Each test starts its own members (etcd_cluster.py) and kills them by pid at the end. Leases
are 1 s, so every failover here takes a second or two.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
from pathlib import Path
from typing import AsyncIterator

import pytest

from gaffer.common.errors import LeadershipLost, NoQuorum, StoreRejected, StoreUnavailable
from gaffer.controller.etcd import wire
from gaffer.controller.etcd.client import EtcdClient
from gaffer.controller.etcd.election import Policy
from gaffer.controller.etcd.leadership import LeaderChange, Leadership
from gaffer.testing import poll_until
from etcd_cluster import EtcdCluster

TTL = 1
POLICY = Policy(ttl=TTL, margin=0.3, retry=0.1, recheck=0.3)
CAMPAIGNER = Path(__file__).with_name("etcd_campaigner.py")


@pytest.fixture
async def etcd(tmp_path) -> AsyncIterator[EtcdCluster]:
    """One etcd member, killed at the end."""
    cluster = EtcdCluster(tmp_path / "etcd", 1)
    try:
        await cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
async def etcd3(tmp_path) -> AsyncIterator[EtcdCluster]:
    """Three etcd members forming one cluster, killed at the end."""
    cluster = EtcdCluster(tmp_path / "etcd", 3)
    try:
        await cluster.start()
        yield cluster
    finally:
        cluster.stop()


class Recorder:
    """A Leadership's changes, each with the loop time it was announced at."""

    def __init__(self) -> None:
        self.changes: list[tuple[float, LeaderChange]] = []

    def __call__(self, change: LeaderChange) -> None:
        self.changes.append((asyncio.get_running_loop().time(), change))


async def test_put_range_txn_and_delete_round_trip(etcd):
    """Bytes keys and values round-trip; a txn guarded by a create revision writes only
    while it holds; a prefix range and delete cover only their prefix."""
    async with EtcdClient(etcd.endpoints) as client:
        await client.put(b"/t/a", b"\x00\xff")
        await client.put("/t/b", "2")
        await client.put("/u", "other")
        found = await client.range("/t/", prefix=True)
        assert [(kv.key, kv.value) for kv in found.kvs] == [(b"/t/a", b"\x00\xff"), (b"/t/b", b"2")]
        created = (await client.get("/t/a")).create_revision
        ok = await client.txn([wire.created_at("/t/a", created)], [wire.put_op("/t/c", "3")])
        stale = await client.txn([wire.created_at("/t/a", created + 100)], [wire.put_op("/t/d", "4")],
                                 [wire.range_op("/t/a")])
        assert ok.succeeded and not stale.succeeded
        assert stale.responses[0].kvs[0].create_revision == created
        assert await client.get("/t/d") is None
        assert await client.delete("/t/", prefix=True) == 3
        assert (await client.range("", prefix=True)).count == 1


async def test_a_write_guarded_by_a_lost_leadership_fails(etcd):
    """A leader's guard taken before it lost the key refuses the write (LeadershipLost) once
    another controller leads (announced on its changes()), and nothing is written."""
    async with EtcdClient(etcd.endpoints) as client:
        first = Leadership(client, "first", policy=POLICY)
        second = Leadership(client, "second", policy=POLICY)
        try:
            await first.start()
            await poll_until(first.may_act, 5, "the first controller to lead")
            guard = first.guard()
            await client.guarded(guard, [wire.put_op("/state", "from first")])
            changes = second.changes()
            announced = asyncio.ensure_future(anext(changes))
            await second.start()
            await first.stop()
            await poll_until(second.may_act, 5, "the second controller to lead")
            assert second.term > guard.term
            assert await asyncio.wait_for(announced, 5) == LeaderChange(True, second.term)
            await changes.aclose()
            with pytest.raises(LeadershipLost, match=f"term {guard.term}"):
                await client.guarded(guard, [wire.put_op("/state", "late from first")])
            assert (await client.get("/state")).value == b"from first"
            with pytest.raises(LeadershipLost):
                first.guard()
        finally:
            await first.stop()
            await second.stop()


async def test_lease_expiry_deposes_a_killed_leader_and_another_wins_within_ttl_plus_1s(etcd, tmp_path):
    """kill -9 of a leading controller: its lease expires and a waiting one leads within
    TTL + 1 s, with a greater term."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(CAMPAIGNER), ",".join(etcd.endpoints), "doomed", str(TTL), "0.3",
        stdout=asyncio.subprocess.PIPE, cwd=str(tmp_path))
    async with EtcdClient(etcd.endpoints) as client:
        survivor = Leadership(client, "survivor", policy=POLICY)
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), 10)
            assert line.startswith(b"leading "), line
            doomed_term = int(line.split()[1])
            await survivor.start()
            await poll_until(lambda: survivor.holder == b"doomed", 5, "the survivor to see the leader")
            assert not survivor.may_act()
            proc.kill()
            await proc.wait()
            await poll_until(survivor.may_act, TTL + 1, "the survivor to lead within TTL + 1 s")
            assert survivor.term > doomed_term
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            await survivor.stop()


async def test_a_leader_that_cannot_renew_steps_down_before_a_successor_leads(etcd3):
    """The leader's only etcd member is frozen (SIGSTOP): it stops acting on its own before
    its lease can expire, and the controller on the other members leads only after that."""
    frozen = etcd3.members[0]
    loop = asyncio.get_running_loop()
    async with EtcdClient([frozen.endpoint]) as alone, EtcdClient(etcd3.endpoints[1:]) as others:
        first_log, second_log = Recorder(), Recorder()
        first = Leadership(alone, "first", policy=POLICY, on_change=first_log)
        second = Leadership(others, "second", policy=POLICY, on_change=second_log)
        try:
            await first.start()
            await poll_until(first.may_act, 5, "the first controller to lead")
            await second.start()
            await poll_until(lambda: second.holder == b"first", 5, "the second to see the leader")
            frozen.signal(signal.SIGSTOP)
            stopped_at = loop.time()
            await poll_until(lambda: not first.may_act(), TTL, "the frozen leader to stop acting")
            await poll_until(second.may_act, 3 * TTL + 2, "the second controller to lead")
            stepped_down = next(t for t, c in first_log.changes if not c.leading)
            took_over = next(t for t, c in second_log.changes if c.leading)
            assert stopped_at < stepped_down < took_over
        finally:
            if frozen.proc.poll() is None:
                frozen.signal(signal.SIGCONT)
            await first.stop()
            await second.stop()


async def test_a_silent_or_dead_endpoint_costs_one_share_of_the_timeout(etcd):
    """With the first endpoint silent (it accepts connections, never answers: a frozen
    member) and the second refusing them, a call is answered by the third, and the next call
    goes straight to it."""
    with socket.socket() as silent, socket.socket() as dead:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        dead.bind(("127.0.0.1", 0))
        endpoints = [f"127.0.0.1:{s.getsockname()[1]}" for s in (silent, dead)] + etcd.endpoints
        async with EtcdClient(endpoints, timeout=3.0) as client:
            assert client.attempt_timeout == pytest.approx(1.0)
            await client.put("/k", "v")
            assert (await client.get("/k", timeout=0.5)).value == b"v"


async def test_losing_two_of_three_members_is_reported_as_no_quorum(etcd3):
    """Two of three members killed: calls fail with NoQuorum naming the survivor and that it
    has no leader (its status says so too); with every member gone it is StoreUnavailable
    naming each endpoint."""
    etcd3.members[1].kill()
    etcd3.members[2].kill()
    errors: list[Exception] = []
    async with EtcdClient(etcd3.endpoints, timeout=1.0) as client:

        async def no_quorum() -> bool:
            try:
                await client.put("/k", "v")
            except (NoQuorum, StoreUnavailable) as exc:
                errors.append(exc)
                return isinstance(exc, NoQuorum)
            return False

        for _ in range(20):
            if await no_quorum():
                break
        assert errors and isinstance(errors[-1], NoQuorum), errors
        assert "no quorum" in errors[-1].message and "no leader" in errors[-1].message
        assert etcd3.members[0].endpoint in errors[-1].message
        assert (await client.status(etcd3.members[0].endpoint)).leader == 0
        etcd3.members[0].kill()
        with pytest.raises(StoreUnavailable) as caught:
            await client.get("/k")
        assert not isinstance(caught.value, NoQuorum)
        assert all(endpoint in caught.value.message for endpoint in etcd3.endpoints)


async def test_a_refused_request_is_not_retried_and_names_the_endpoint(etcd):
    """A put bound to a lease that does not exist is StoreRejected (lease_not_found) at once."""
    async with EtcdClient(etcd.endpoints) as client:
        with pytest.raises(StoreRejected, match=etcd.endpoints[0]) as caught:
            await client.put("/k", "v", lease=12345)
        assert caught.value.reason == "lease_not_found"
