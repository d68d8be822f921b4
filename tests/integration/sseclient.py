"""Reading a Server-Sent Events stream in tests: one message at a time, with a deadline."""

from __future__ import annotations

import asyncio
import codecs
from typing import Any

import aiohttp

from gaffer.controller.http.sse import decode


class SseStream:
    """An open SSE response; ``next`` returns the next message (comments included) as
    ``{"id", "event", "data", "comment"}``."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.messages: list[dict[str, Any]] = []
        self._buffer = ""
        self._decoder = codecs.getincrementaldecoder("utf-8")()

    async def next(self, timeout: float = 10.0) -> dict[str, Any]:
        async def read() -> dict[str, Any]:
            while True:
                block, found, rest = self._buffer.partition("\n\n")
                if found:
                    self._buffer = rest
                    if block.strip("\n"):
                        return decode(block.strip("\n"))
                    continue
                chunk = await self.response.content.readany()
                if not chunk:
                    raise EOFError("the stream ended")
                self._buffer += self._decoder.decode(chunk)

        got = await asyncio.wait_for(read(), timeout)
        self.messages.append(got)
        return got

    async def until(self, predicate, timeout: float = 10.0, limit: int = 10_000) -> dict[str, Any]:
        """The first message (of at most ``limit``) that satisfies ``predicate``."""
        deadline = asyncio.get_running_loop().time() + timeout
        for _ in range(limit):
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                break
            got = await self.next(left)
            if predicate(got):
                return got
        raise AssertionError(f"no such message within {timeout}s; last: {self.messages[-5:]}")

    async def events(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """The next ``count`` messages that carry an event position (comments skipped)."""
        out = []
        while len(out) < count:
            got = await self.until(lambda m: m["id"] is not None, timeout)
            out.append(got)
        return out

    def close(self) -> None:
        self.response.close()


async def open_stream(session: aiohttp.ClientSession, url: str, token: str, headers: dict[str, str] | None = None,
                      **kwargs: Any) -> SseStream:
    response = await session.get(url, headers={"Authorization": f"Bearer {token}", **(headers or {})}, **kwargs)
    assert response.status == 200, await response.text()
    assert response.headers["Content-Type"].startswith("text/event-stream")
    return SseStream(response)


async def eventually(probe, timeout: float = 10.0, what: str = "") -> None:
    """Poll the coroutine function ``probe`` until it returns true or ``timeout`` passes."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await probe():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or probe}")
        await asyncio.sleep(0.05)  # poll
