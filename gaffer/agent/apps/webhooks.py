"""Webhooks: POST selected gaffer events as JSON to HTTP endpoints.

Nothing here can hold up the Manager. Publishing on the bus never waits; one reader task only
sorts events into per-hook queues; each hook has its own bounded queue and its own worker, so a
slow or dead endpoint delays only its own events. A full queue drops its *oldest* event
(counted), so a hook that comes back receives what is recent rather than a backlog.

Delivery, per hook: in order, one request at a time, each event attempted at most
``retries + 1`` times. Connection errors, timeouts and 5xx answers are retried after
``backoff * 2**n`` seconds (capped at MAX_BACKOFF); any other non-2xx answer (4xx, and 3xx,
since redirects are not followed) is final. An event that runs out of attempts is counted as
failed and the worker moves on.

The body of every request::

    {"topic": "proc.web.spawn", "seq": 42, "ts": 1700000000.1, "data": {...}}

``events`` selects by topic prefix; the default ``[""]`` means every event except process
output (``output.*``), which is only sent to hooks that ask for it with a prefix starting with
``output``, and is only produced by the Manager while someone asks.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import math
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping
from urllib.parse import urlsplit

import aiohttp

from gaffer import __version__
from gaffer.common.bus import Event, EventBus, Subscription
from gaffer.common.errors import ConfigError, SubscriberTooSlow
from gaffer.common.describe import describe as _kind
from gaffer.common.topics import FAMILIES

log = logging.getLogger("gaffer.apps.webhooks")

OUTPUT = "output"
SUBSCRIPTION_SIZE = 10_000
MAX_BACKOFF = 30.0
MAX_SECONDS = 86_400.0
HOOK_KEYS = ("url", "events", "headers")
USER_AGENT = f"gaffer/{__version__} webhooks"


@dataclass(frozen=True)
class Hook:
    """One endpoint and the topic prefixes it receives."""

    url: str
    events: tuple[str, ...] = ("",)
    headers: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def wants(self, topic: str) -> bool:
        if topic.startswith(OUTPUT + "."):
            return any(p.startswith(OUTPUT) and topic.startswith(p) for p in self.events)
        return any(topic.startswith(p) for p in self.events)

    def bus_prefixes(self) -> list[str]:
        """Prefixes to subscribe with: never one that would also select output.*."""
        out: list[str] = []
        for prefix in self.events:
            if OUTPUT.startswith(prefix) and not prefix.startswith(OUTPUT):
                out.extend(f for f in FAMILIES if f.startswith(prefix))
            else:
                out.append(prefix)
        return out


@dataclass(eq=False)
class _Queue:
    """A hook's bounded queue and counters; drops the oldest event when full."""

    hook: Hook
    size: int
    pending: collections.deque[Event] = field(default_factory=collections.deque)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    sent: int = 0
    failed: int = 0
    dropped: int = 0
    retried: int = 0

    def offer(self, event: Event) -> None:
        if len(self.pending) >= self.size:
            self.pending.popleft()
            self.dropped += 1
        self.pending.append(event)
        self.ready.set()

    async def take(self) -> Event:
        while not self.pending:
            self.ready.clear()
            await self.ready.wait()
        return self.pending.popleft()

    def stats(self) -> dict[str, Any]:
        return {
            "url": self.hook.url,
            "events": list(self.hook.events),
            "sent": self.sent,
            "failed": self.failed,
            "dropped": self.dropped,
            "retried": self.retried,
            "queued": len(self.pending),
        }


class WebhooksApp:
    """The ``webhooks`` app: see the module docstring for what it promises."""

    def __init__(
        self,
        hooks: list[Mapping[str, Any]],
        retries: int = 3,
        timeout: float = 5.0,
        backoff: float = 0.5,
        queue_size: int = 1000,
    ) -> None:
        problems: list[str] = []
        self.hooks = _parse_hooks(hooks, problems)
        self.retries = _integer("retries", retries, 0, problems)
        self.timeout = _number("timeout", timeout, problems, positive=True)
        self.backoff = _number("backoff", backoff, problems, positive=False)
        self.queue_size = _integer("queue_size", queue_size, 1, problems)
        if problems:
            if len(problems) == 1:
                raise ConfigError(problems[0])
            listed = "\n".join(f"  {p}" for p in problems)
            raise ConfigError(f"{len(problems)} problems:\n{listed}")
        self._queues = [_Queue(hook, self.queue_size) for hook in self.hooks]
        self._prefixes = tuple(dict.fromkeys(p for h in self.hooks for p in h.bus_prefixes()))
        self._loop: asyncio.AbstractEventLoop | None = None
        self._manager: Any = None
        self._bus: EventBus | None = None
        self._sub: Subscription | None = None
        self._session: aiohttp.ClientSession | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.gaps = 0

    async def start(self, loop: asyncio.AbstractEventLoop, manager: Any) -> None:
        """Subscribe now (so no event after this returns is missed) and start the workers."""
        if self._tasks:
            return
        self._loop, self._manager = loop, manager
        self._bus = manager.bus
        self._sub = self._subscribe()
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.timeout),
            headers={"User-Agent": USER_AGENT},
        )
        self._tasks = [loop.create_task(self._read(), name="webhooks-reader")]
        for index, queue in enumerate(self._queues):
            self._tasks.append(loop.create_task(self._work(queue), name=f"webhooks-{index}"))

    async def stop(self) -> None:
        """Cancel the tasks, close the subscription and the session.

        Events queued or in flight are dropped and counted as such.
        """
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for queue in self._queues:
            queue.dropped += len(queue.pending)
            queue.pending.clear()
        if self._sub is not None:
            self._sub.close()
            self._sub = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def restart(self) -> None:
        await self.stop()
        await self.start(self._loop or asyncio.get_running_loop(), self._manager)

    def stats(self) -> dict[str, Any]:
        """Counters per hook (in configuration order) and how often the bus cut us off."""
        return {"hooks": [queue.stats() for queue in self._queues], "gaps": self.gaps}

    def _subscribe(self) -> Subscription:
        assert self._bus is not None
        return self._bus.subscribe(self._prefixes, maxsize=SUBSCRIPTION_SIZE)

    async def _read(self) -> None:
        """Sort bus events into the hook queues; resubscribe after falling behind."""
        while True:
            sub = self._sub
            assert sub is not None
            try:
                async for event in sub:
                    for queue in self._queues:
                        if queue.hook.wants(event.topic):
                            queue.offer(event)
                return
            except SubscriberTooSlow:
                self.gaps += 1
                log.warning(
                    "webhooks fell %d events behind the bus and missed some; resubscribed",
                    SUBSCRIPTION_SIZE,
                )
                self._sub = self._subscribe()

    async def _work(self, queue: _Queue) -> None:
        while True:
            event = await queue.take()
            try:
                await self._deliver(queue, event)
            except asyncio.CancelledError:
                queue.dropped += 1
                raise
            except Exception:
                queue.failed += 1
                log.exception("webhook %s: cannot deliver %s #%d", queue.hook.url, event.topic,
                              event.seq)

    async def _deliver(self, queue: _Queue, event: Event) -> None:
        hook = queue.hook
        body = json.dumps(event.to_dict(), default=str, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", **hook.headers}
        attempts = self.retries + 1
        reason = ""
        for attempt in range(1, attempts + 1):
            retry, reason = await self._post(hook.url, body, headers)
            if not reason:
                queue.sent += 1
                return
            if not retry or attempt == attempts:
                break
            queue.retried += 1
            await asyncio.sleep(min(self.backoff * 2.0 ** min(attempt - 1, 30), MAX_BACKOFF))
        queue.failed += 1
        log.warning("webhook %s: dropped %s #%d after %d attempt(s): %s",
                    hook.url, event.topic, event.seq, attempt, reason)

    async def _post(self, url: str, body: bytes, headers: dict[str, str]) -> tuple[bool, str]:
        """One attempt: (False, "") on success, else (worth retrying, why it failed)."""
        assert self._session is not None
        try:
            async with self._session.post(
                url, data=body, headers=headers, allow_redirects=False
            ) as resp:
                if 200 <= resp.status < 300:
                    return False, ""
                return resp.status >= 500, f"HTTP {resp.status}"
        except asyncio.TimeoutError:
            return True, f"no answer within {self.timeout:g}s"
        except aiohttp.ClientError as exc:
            return True, f"{type(exc).__name__}: {exc}"


def _parse_hooks(value: Any, problems: list[str]) -> list[Hook]:
    if not isinstance(value, (list, tuple)) or not value:
        problems.append(f"hooks: must be a non-empty list of tables, got {_kind(value)}")
        return []
    hooks = []
    for index, item in enumerate(value):
        where = f"hooks[{index}]"
        if not isinstance(item, Mapping):
            problems.append(f"{where}: must be a table with a url, got {_kind(item)}")
            continue
        before = len(problems)
        for key in item:
            if key not in HOOK_KEYS:
                problems.append(f"{where}.{key}: unknown field (fields: {', '.join(HOOK_KEYS)})")
        url = _url(f"{where}.url", item.get("url"), problems)
        events = _events(f"{where}.events", item.get("events", [""]), problems)
        headers = _headers(f"{where}.headers", item.get("headers", {}), problems)
        if len(problems) == before:
            hooks.append(Hook(url, events, MappingProxyType(headers)))
    return hooks


def _url(where: str, value: Any, problems: list[str]) -> str:
    if not isinstance(value, str):
        problems.append(f"{where}: must be an http:// or https:// URL, got {_kind(value)}")
        return ""
    try:
        parts = urlsplit(value)
        parts.port
    except ValueError as exc:
        problems.append(f"{where}: {value!r} is not a valid URL: {exc}")
        return ""
    if parts.scheme not in ("http", "https") or not parts.hostname:
        problems.append(f"{where}: must be an http:// or https:// URL with a host, got {value!r}")
    return value


def _events(where: str, value: Any, problems: list[str]) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)) or not value:
        problems.append(f"{where}: must be a non-empty list of topic prefixes, got {_kind(value)}")
        return ()
    for index, prefix in enumerate(value):
        if not isinstance(prefix, str):
            problems.append(f"{where}[{index}]: must be a topic prefix string, got {_kind(prefix)}")
    return tuple(value)


def _headers(where: str, value: Any, problems: list[str]) -> dict[str, str]:
    if not isinstance(value, Mapping):
        problems.append(f"{where}: must be a table of strings, got {_kind(value)}")
        return {}
    for key, item in value.items():
        if not isinstance(key, str) or not isinstance(item, str):
            problems.append(f"{where}.{key}: header values must be strings, got {_kind(item)}")
        elif "\n" in item or "\r" in item or "\n" in key or "\r" in key:
            problems.append(f"{where}.{key}: must not contain a line break")
    return dict(value)


def _integer(where: str, value: Any, minimum: int, problems: list[str]) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        problems.append(f"{where}: must be an integer, got {_kind(value)}")
        return minimum
    if value < minimum:
        problems.append(f"{where}: must be >= {minimum}, got {value}")
    return value


def _number(where: str, value: Any, problems: list[str], *, positive: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        problems.append(f"{where}: must be a number of seconds, got {_kind(value)}")
        return 1.0
    bound = "> 0" if positive else ">= 0"
    if value > MAX_SECONDS or not math.isfinite(value) or value < 0 or (positive and value == 0):
        problems.append(f"{where}: must be {bound} and at most {MAX_SECONDS:g}, got {value!r}")
        return 1.0
    return float(value)


