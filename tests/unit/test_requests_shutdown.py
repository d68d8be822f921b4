"""A stopping controller answers every request it accepted (issue 9, item 5, the controller's
side): running ones finish within the grace, the rest and late ones get ``shutting_down``."""

from __future__ import annotations

import asyncio
from typing import Any

from gaffer.common import protocol
from gaffer.common.errors import ShuttingDown, from_wire
from gaffer.controller.requests import Requests
from gaffer.controller.tokens import LOCAL
from gaffer.controller.server import Session
from gaffer.testing import loop_turn


def request(requests: Requests, request_id: int, op: str) -> None:
    session = Session(peer=b"p", role="client", name="c", address=None)
    body = {"id": request_id, "op": op, "args": {}}
    requests.receive(session, protocol.Message(protocol.PROTOCOL_VERSION, "request", request_id, body))


class TestStoppingRequests:
    async def test_a_running_request_finishes_and_is_answered(self):
        """stop() waits for a request in progress (within the grace) and its reply goes out."""
        release = asyncio.Event()

        async def slow(args: dict[str, Any]) -> str:
            await release.wait()
            return "done"

        replies: list[dict[str, Any]] = []
        requests = Requests({"slow": slow}, lambda _s, body: replies.append(body) or True, lambda _s: LOCAL)
        request(requests, 1, "slow")
        await loop_turn()  # the request's task starts
        stopping = asyncio.get_running_loop().create_task(requests.stop(grace=30))
        await loop_turn()  # stop() is now waiting for it
        release.set()
        await asyncio.wait_for(stopping, 30)
        assert replies == [{"id": 1, "ok": True, "result": "done", "error": None}]

    async def test_a_request_past_the_grace_is_answered_shutting_down(self):
        """A request that cannot finish in the grace is cancelled and told so, not dropped."""
        async def forever(args: dict[str, Any]) -> None:
            await asyncio.Event().wait()

        replies: list[dict[str, Any]] = []
        requests = Requests({"forever": forever}, lambda _s, body: replies.append(body) or True, lambda _s: LOCAL)
        request(requests, 1, "forever")
        await loop_turn()
        await asyncio.wait_for(requests.stop(grace=0), 30)
        assert len(replies) == 1 and replies[0]["id"] == 1 and replies[0]["ok"] is False
        error = from_wire(replies[0]["error"])
        assert isinstance(error, ShuttingDown) and "stopped before 'forever' finished" in error.message
        assert requests.running == 0

    async def test_a_request_after_stop_began_is_refused(self):
        """A request that arrives while the controller stops is answered shutting_down at once."""
        async def ok(args: dict[str, Any]) -> str:
            return "ok"

        replies: list[dict[str, Any]] = []
        requests = Requests({"ok": ok}, lambda _s, body: replies.append(body) or True, lambda _s: LOCAL)
        await requests.stop()
        request(requests, 2, "ok")
        assert [from_wire(r["error"]).code for r in replies] == ["shutting_down"]
        assert requests.running == 0
