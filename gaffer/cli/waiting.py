"""``gafferctl wait``'s shell: the event stream in, ``waitgoal``'s verdict out, within a bound.

The stream is subscribed first (``proc.<name>.``, ``template.<name>.`` and ``node.``), then
the state is read once (``get`` and ``ps``), then every event is folded into it and judged
again: no polling. The subscription starts from the stream's position read before the state
(``status.event_log.position``), so no event between the read and the subscription is missed. A marker of lost events (anything the
stream yields that is not an event), or a queue that overflows, makes the state be read anew.
"""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator

from gaffer.cli.waitgoal import Goal, Verdict, View, judge, needs_read, observe, progress, view_of
from gaffer.client.aio import AsyncClient
from gaffer.common.errors import ControllerUnreachable, TemplateNotFound

REACHED, TIMED_OUT, GONE = 0, 1, 2
"""Exit statuses of ``gafferctl wait``."""
QUEUE = 10_000
"""Events held between the stream and the judge; past it the state is read anew."""
_REREAD = object()


async def wait_for(client: AsyncClient, name: str, goal: Goal, timeout: float) -> tuple[int, str]:
    """(exit status, message) once ``name`` reaches ``goal``, is gone, or ``timeout`` passes."""
    queue: asyncio.Queue[Any] = asyncio.Queue(QUEUE)
    view = View(name)
    pump: asyncio.Task | None = None
    try:
        async with asyncio.timeout(timeout):
            since = _position(await client.call("status"))
            stream = client.events((f"proc.{name}.", f"template.{name}.", "node."), since=since)
            pump = asyncio.get_running_loop().create_task(_pump(stream, queue))
            view = await _read(client, name)
            if view.deleted:
                return GONE, f"no template named {name!r}"
            while (verdict := judge(view, goal)) is Verdict.WAITING:
                item = await _next(queue, pump)
                if item is _REREAD:
                    view = await _read(client, name)
                    continue
                view = observe(view, item.topic, item.data)
                if view.refresh or needs_read(view, goal):
                    view = await _read(client, name)
    except TimeoutError:
        return TIMED_OUT, f"{name}: not {goal.describe()} within {timeout:g}s: {progress(view, goal)}"
    finally:
        if pump is not None:
            pump.cancel()
            await asyncio.gather(pump, return_exceptions=True)
    if verdict is Verdict.GONE:
        return GONE, f"{name}: the template was deleted"
    return REACHED, f"{name}: {progress(view, goal)}"


async def wait_for_all(client: AsyncClient, names: list[str], timeout: float) -> tuple[int, str]:
    """``apply --wait``: each of ``names`` ready on its current version, in turn, all within
    ``timeout``; the first that times out or is gone ends the wait."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    goal = Goal(ready=True, current=True)
    messages = []
    for name in names:
        status, message = await wait_for(client, name, goal, max(0.0, deadline - loop.time()))
        if status != REACHED:
            return status, message
        messages.append(message)
    return REACHED, "\n".join(messages)


async def _read(client: AsyncClient, name: str) -> View:
    try:
        template = await client.call("get", name=name)
    except TemplateNotFound:
        return View(name, deleted=True)
    rows = await client.listing("ps", name=name)
    return view_of(template, rows)


def _position(status: dict[str, Any]) -> int | None:
    """The stream's last position, when the controller tells it (``status.event_log.position``)."""
    events = status.get("event_log")
    position = events.get("position") if isinstance(events, dict) else None
    return position if type(position) is int else None


async def _pump(stream: AsyncIterator[Any], queue: asyncio.Queue[Any]) -> None:
    """Stream -> queue; what is not an event, or no room, asks for a new read instead."""
    try:
        async for item in stream:
            if not hasattr(item, "topic"):
                item = _REREAD
            try:
                queue.put_nowait(item)
            except asyncio.QueueFull:
                while not queue.empty():
                    queue.get_nowait()
                queue.put_nowait(_REREAD)
    finally:
        await stream.aclose()  # type: ignore[attr-defined]


async def _next(queue: asyncio.Queue[Any], pump: asyncio.Task) -> Any:
    """The next queued item; the stream's own failure (the controller gone) is raised here."""
    if not queue.empty():
        return queue.get_nowait()
    getter = asyncio.ensure_future(queue.get())
    try:
        await asyncio.wait({getter, pump}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not getter.done():
            getter.cancel()
    if getter.done() and not getter.cancelled():
        return getter.result()
    pump.result()  # raises what ended the stream
    raise ControllerUnreachable("the controller's event stream ended")
