"""Helpers for tests that drive real processes: wait on events, not on the clock."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import time
from typing import Any, Callable

import psutil

from gaffer.common.bus import Event, Subscription
from gaffer.common.template import Template, parse_template

POLL = 0.01


async def loop_turn() -> None:
    """Let the event loop run one turn (the callbacks and tasks ready now), time standing
    still: a step a test takes on purpose, never a wait for something to happen."""
    await asyncio.sleep(0)


def template(name: str = "t", **fields: Any) -> Template:
    """A validated template with test-friendly defaults (no startsecs wait)."""
    data = {"cmd": "sleep", "args": ["300"], "startsecs": 0, **fields}
    return parse_template(data, name=name)


async def next_event(
    sub: Subscription,
    topic: str,
    where: Callable[[Event], bool] | None = None,
    timeout: float = 10.0,
) -> Event:
    """The next event on ``sub`` whose topic starts with ``topic`` (and matches ``where``)."""

    async def look() -> Event:
        async for event in sub:
            if event.topic.startswith(topic) and (where is None or where(event)):
                return event
        raise AssertionError(f"subscription closed before an event on {topic!r}")

    return await asyncio.wait_for(look(), timeout)


async def collect_events(
    sub: Subscription, topic: str, count: int, timeout: float = 10.0
) -> list[Event]:
    """The next ``count`` events whose topic starts with ``topic``."""
    found: list[Event] = []

    async def look() -> None:
        async for event in sub:
            if event.topic.startswith(topic):
                found.append(event)
                if len(found) == count:
                    return

    await asyncio.wait_for(look(), timeout)
    return found


def interrupt(proc: "subprocess.Popen", timeout: float = 20.0) -> int:
    """Stop a gaffer command as Ctrl-C does; KILL it if it has not ended within ``timeout``
    (the test still fails on what it checks, but leaves nothing running). Its exit status."""
    proc.send_signal(signal.SIGINT)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def pid_dead(pid: int) -> bool:
    """True when ``pid`` no longer runs (gone, or a zombie nobody has reaped yet)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def poll_until(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    """Poll ``predicate`` until it holds or ``timeout`` passes (then AssertionError)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        await asyncio.sleep(POLL)  # poll


def free_port() -> int:
    """A free loopback port whose successor is free too (a controller's events endpoint)."""
    for _ in range(100):
        with socket.socket() as first:
            first.bind(("127.0.0.1", 0))
            port = first.getsockname()[1]
            with socket.socket() as second:
                try:
                    second.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
                return port
    raise RuntimeError("no pair of free consecutive ports on loopback")
