"""The HTTP rows of ``bench/http.py``: ``GET /v1/instances``, SSE fan-out of ``/v1/events``,
and ``GET /v1/status`` under 10 concurrent clients. Each is a ``Case`` (see ``httpbench.py``):
it gets the running cluster (its controller serving ``--http`` on loopback, an admin token read
from the controller's ``admin.token``) and a size, and returns its rows.

- **instances**: ``GET /v1/instances`` timed from send to the body read and decoded, one
  keep-alive connection, ``--calls`` calls ``--gap-ms`` apart.
- **fan-out** (at the first size only): C clients hold ``GET /v1/events?prefix=template.burst-``
  open; a burst of ``--burst`` events is published: applies of 100 empty templates, each apply
  changing their env (100 ``updated`` events, one transaction), by 4 concurrent ZMQ callers.
  Every client must receive every event (counted, ids increasing). A client's rate is its events
  over the time from the burst's first send to its last event: the median client's, the
  slowest's in the note, with the burst's own pace (which bounds it).
- **status**: 10 workers on one aiohttp session (keep-alive, 10 connections) call
  ``GET /v1/status`` back to back for ``--rps-seconds``; requests per second and latencies.

All clients live in the bench's process (one loop): at 100 SSE clients the parsing shares a
core with the requests; the note says how far behind the publisher the slowest client ended.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from typing import TYPE_CHECKING, Any

import aiohttp

if TYPE_CHECKING:
    from httpbench import Cluster, Row

BURST_TEMPLATE = "burst"
FANOUT_CLIENTS = (10, 100)
STATUS_CLIENTS = 10
BURST_CALLERS = 4
BURST_WIDTH = 100
DRAIN_TIMEOUT = 60.0


def _row(*args: Any, **kwargs: Any) -> "Row":
    from httpbench import Row

    return Row(*args, **kwargs)


def _headers(cluster: "Cluster") -> dict[str, str]:
    return {"Authorization": f"Bearer {cluster.token}"}


async def instances(cluster: "Cluster", n: int, args: argparse.Namespace) -> list["Row"]:
    """``GET /v1/instances``, decoded and checked; a 404 (no route yet) is reported, not timed."""
    from httpbench import timed

    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=connector, headers=_headers(cluster)) as session:
        url = cluster.http_url + "/v1/instances"

        async def call() -> None:
            async with session.get(url) as response:
                if response.status != 200:
                    raise RuntimeError(f"GET /v1/instances: {response.status} {(await response.text())[:200]}")
                body = await response.json()
            items = body["items"] if isinstance(body, dict) else body
            assert len(items) == n, len(items)

        try:
            await call()
        except RuntimeError as e:
            cluster.problems.append(f"- GET /v1/instances at {n:,}: {e}")
            return []
        return [_row("gaffer", "GET /v1/instances (HTTP, decoded)", n, await timed(call, args.calls, args.gap))]


class _Listener:
    """One SSE client: counts the events of the burst template, checks ids increase."""

    def __init__(self) -> None:
        self.count = 0
        self.last_id = -1
        self.last_at = 0.0
        self.disorder = 0
        self.other: list[str] = []
        self.ready = asyncio.Event()

    async def listen(self, session: aiohttp.ClientSession, url: str) -> None:
        async with session.get(url, params={"prefix": f"template.{BURST_TEMPLATE}-"},
                               timeout=aiohttp.ClientTimeout(total=None, sock_read=None)) as response:
            if response.status != 200:
                raise RuntimeError(f"GET /v1/events: {response.status}")
            self.ready.set()
            kind = ""
            async for raw in response.content:
                line = raw.rstrip(b"\n")
                if line.startswith(b"id: "):
                    ident = int(line[4:])
                    if ident <= self.last_id:
                        self.disorder += 1
                    self.last_id = ident
                elif line.startswith(b"event: "):
                    kind = line[7:].decode()
                elif line.startswith(b"data: "):
                    if kind:
                        self.other.append(kind)
                    else:
                        self.last_at = time.perf_counter()
                        self.count += 1
                elif not line:
                    kind = ""


def _burst_templates(version: int) -> list[dict[str, Any]]:
    return [{"name": f"{BURST_TEMPLATE}-{i:03d}", "cmd": "/bin/true", "numprocesses": 0,
             "env": {"BURST": str(version)}, "redirect_output": []} for i in range(BURST_WIDTH)]


async def _burst(cluster: "Cluster", events: int) -> tuple[int, float]:
    """Applies of the ``BURST_WIDTH`` empty templates, each changing their env (one
    ``template.burst-NNN.updated`` per template: ``BURST_WIDTH`` events per apply), by
    ``BURST_CALLERS`` concurrent callers, until at least ``events``; (events published,
    seconds from the first send to the last answer)."""
    applies = -(-events // BURST_WIDTH)
    versions = iter(range(1, applies + 1))

    async def caller() -> int:
        done = 0
        for version in versions:
            await cluster.client.call("apply", templates=_burst_templates(version))
            done += BURST_WIDTH
        return done

    started = time.perf_counter()
    counts = await asyncio.gather(*(caller() for _ in range(BURST_CALLERS)))
    return sum(counts), time.perf_counter() - started


async def fanout(cluster: "Cluster", n: int, args: argparse.Namespace) -> list["Row"]:
    """SSE fan-out to 10 and 100 clients of a burst of ``args.burst`` events (at the first size)."""
    if n != args.sizes[0]:
        return []
    await cluster.client.call("apply", templates=_burst_templates(0))
    try:
        return [await _fanout_once(cluster, n, clients, args.burst) for clients in FANOUT_CLIENTS]
    finally:
        for i in range(BURST_WIDTH):
            await cluster.client.call("delete", name=f"{BURST_TEMPLATE}-{i:03d}")


async def _fanout_once(cluster: "Cluster", n: int, clients: int, events: int) -> "Row":
    listeners = [_Listener() for _ in range(clients)]
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, headers=_headers(cluster)) as session:
        url = cluster.http_url + "/v1/events"
        tasks = [asyncio.create_task(one.listen(session, url)) for one in listeners]
        try:
            await asyncio.wait_for(asyncio.gather(*(one.ready.wait() for one in listeners)), 30)
            burst_from = time.perf_counter()
            published, took = await asyncio.wait_for(_burst(cluster, events), DRAIN_TIMEOUT)
            behind_from = time.perf_counter()
            deadline = behind_from + DRAIN_TIMEOUT
            while any(one.count < published for one in listeners) and time.perf_counter() < deadline:
                if any(t.done() for t in tasks):
                    break
                await asyncio.sleep(0.05)  # poll the counts, bounded by the deadline
            behind = max(0.0, max(one.last_at for one in listeners) - behind_from)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    rates = sorted(one.count / (one.last_at - burst_from) if one.count else 0.0 for one in listeners)
    short = [one.count for one in listeners if one.count != published]
    problems = []
    if short:
        problems.append(f"{len(short)} clients missed events (got {min(short)}..{max(short)} of {published})")
    if any(one.disorder for one in listeners):
        problems.append("ids out of order")
    if any(one.other for one in listeners):
        problems.append(f"other frames: {sorted({k for one in listeners for k in one.other})}")
    note = (f"{published:,} events each, all received by all; slowest client {rates[0]:,.0f}/s; "
            f"publish pace {published / took:,.0f}/s; last client done {behind * 1000:.0f} ms after the burst")
    if problems:
        note = "; ".join(problems) + f"; publish pace {published / took:,.0f}/s"
    return _row("gaffer", f"SSE /v1/events, {clients} clients", n, [], note,
                rate=statistics.median(rates), unit="events/s per client")


async def status(cluster: "Cluster", n: int, args: argparse.Namespace) -> list["Row"]:
    """``GET /v1/status``, 10 concurrent keep-alive clients for ``args.rps_seconds``."""
    connector = aiohttp.TCPConnector(limit=STATUS_CLIENTS)
    latencies: list[float] = []
    errors = 0
    async with aiohttp.ClientSession(connector=connector, headers=_headers(cluster)) as session:
        url = cluster.http_url + "/v1/status"
        stop_at = time.perf_counter() + args.rps_seconds

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < stop_at and len(latencies) < 1_000_000:
                started = time.perf_counter()
                async with session.get(url) as response:
                    body = await response.read()
                if response.status != 200 or not json.loads(body):
                    errors += 1
                latencies.append((time.perf_counter() - started) * 1000)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(STATUS_CLIENTS)))
        took = time.perf_counter() - started
    note = f"{STATUS_CLIENTS} clients, keep-alive, {args.rps_seconds:g} s" + (f"; {errors} errors" if errors else "")
    return [_row("gaffer", "GET /v1/status", n, latencies, note, rate=len(latencies) / took, unit="requests/s")]
