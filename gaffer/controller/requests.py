"""Client requests: one task per request, one reply each, and errors a client can act on.

Each ``request`` runs as a task owned here. A stopping controller does not drop what it
accepted: ``stop`` refuses new requests (``shutting_down``), gives the running ones up to
``grace`` seconds to finish and answer, and answers those it then cancels with
``shutting_down`` too, so every request gets exactly one reply and none outlives the
controller. Its op's handler is called with
the request's ``args`` map as one argument, so a call can never fail for the shape of the
arguments: every argument is checked inside the op (``common/arguments.py``). What the handler
raises decides the reply:

- a GafferError is the answer (its code, message and details);
- anything else is a bug in the controller: logged with its traceback and answered as an
  ``error`` saying so, never as the client's fault;
- an answer too large for one message becomes ``too_large`` (ask in pages).

Before an op runs, its caller's role is checked against ``common/roles.py``'s table
(``principals.py``): a caller below the op's least role is answered ``forbidden`` (naming the
op and the role it needs) and nothing runs. The op's task then holds its caller in
``tokens.CALLER`` for the ops that act for their caller (``login``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable, Mapping

from gaffer.common import protocol
from gaffer.common.errors import GafferError, InvalidRequest, ProtocolError, ShuttingDown, TooLarge
from gaffer.common.protocol import Message
from gaffer.common.tasks import cancel_and_wait
from gaffer.controller.principals import refusal
from gaffer.controller.server import Session
from gaffer.controller.tokens import CALLER, Principal

log = logging.getLogger("gaffer.controller")

STOP_GRACE = 5.0
"""How long a stopping controller lets running requests finish: a command waits at most this
long for its agent's answer, and a store write takes far less."""
MAX_PROBLEMS = 200
"""Problems sent back with one refused request: enough to fix a file, never too big to send."""
Handler = Callable[[dict[str, Any]], Awaitable[Any]]
Reply = Callable[[Session, dict[str, Any]], bool]
PrincipalOf = Callable[[Session], Principal | None]


class Requests:
    def __init__(self, ops: Mapping[str, Handler], reply: Reply, principal: PrincipalOf) -> None:
        """``principal``: who a session speaks for (``SessionPrincipals.principal``; None for
        a key no longer authorized)."""
        self._ops = ops
        self._reply = reply
        self._principal = principal
        self._tasks: set[asyncio.Task] = set()
        self._stopping = False
        self.failed = 0
        """Requests whose handler failed with a bug (not a GafferError)."""
        self.forbidden = 0
        """Requests refused because their caller's role was below the op's."""

    def receive(self, session: Session, message: Message) -> None:
        body = message.body
        if self._stopping:
            self._error(session, body["id"], ShuttingDown(
                f"the controller is stopping: {body['op']!r} was not carried out; retry once it is back"
            ))
            return
        handler = self._ops.get(body["op"])
        if handler is None:
            self._error(session, body["id"], InvalidRequest(f"unknown operation {body['op']!r}"))
            return
        principal = self._principal(session)
        refused = refusal(body["op"], principal, f"key {session.name!r}")
        if refused is not None:
            self.forbidden += 1
            log.debug("refused %s to %s: %s", body["op"], session.label, refused.message)
            self._error(session, body["id"], refused)
            return
        task = asyncio.get_running_loop().create_task(
            self._answer(session, body["id"], body["op"], handler, body["args"], principal)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @property
    def running(self) -> int:
        return len(self._tasks)

    async def stop(self, grace: float = STOP_GRACE) -> None:
        """Refuse new requests; let those running finish within ``grace`` seconds, then
        cancel the rest (each answered ``shutting_down``) and wait until each has ended."""
        self._stopping = True
        tasks = list(self._tasks)
        if tasks and grace > 0:
            await asyncio.wait(tasks, timeout=grace)
        for task in tasks:
            task.cancel()
        for task in tasks:
            await cancel_and_wait(task)

    async def _answer(
        self, session: Session, request_id: int, op: str, handler: Handler, args: dict, caller: Principal | None,
    ) -> None:
        CALLER.set(caller)  # this task's own context: never seen by another request
        try:
            result = await handler(args)
        except asyncio.CancelledError:
            if self._stopping:
                self._error(session, request_id, ShuttingDown(
                    f"the controller stopped before {op!r} finished; what it had stored is kept: "
                    "check, and retry once it is back"
                ))
            raise
        except GafferError as exc:
            self._error(session, request_id, exc)
            return
        except Exception as exc:
            self.failed += 1
            log.exception("request %s failed: a bug in the controller", op)
            self._error(session, request_id, GafferError(f"internal error in {op!r}: {type(exc).__name__}: {exc}"))
            return
        try:
            self._reply(session, {"id": request_id, "ok": True, "result": result, "error": None})
        except ProtocolError as exc:
            if exc.reason != protocol.TOO_LARGE:
                raise
            self._error(session, request_id, TooLarge(
                f"the answer to {op!r} does not fit in one message ({protocol.MAX_MESSAGE} bytes): "
                "ask for it in pages with limit and continue (gafferctl pages by itself)"
            ))

    def _error(self, session: Session, request_id: int, exc: GafferError) -> None:
        """Send ``exc``; one too big for a message (a template file with thousands of problems)
        goes with its first problems and a count of the rest."""
        self._reply(session, {"id": request_id, "ok": False, "result": None, "error": wire_error(exc)})


def wire_error(exc: GafferError) -> dict[str, Any]:
    """``exc.to_dict()``, cut to fit a reply: at most MAX_PROBLEMS problems, a bounded message."""
    error = exc.to_dict()
    problems = error.get("problems")
    if problems is not None and len(problems) > MAX_PROBLEMS:
        error["problems"] = problems[:MAX_PROBLEMS]
        lines = error["message"].splitlines()[: MAX_PROBLEMS + 1]
        error["message"] = "\n".join(lines + [f"  ... and {len(problems) - MAX_PROBLEMS} more problems"])
    if len(error["message"]) > protocol.MAX_TEXT:
        error["message"] = error["message"][: protocol.MAX_TEXT - 100] + "\n  ... (cut)"
    details = error.get("details")
    if details:
        error["details"] = {
            key: value[:4_000] if isinstance(value, str) else value for key, value in details.items()
        }
    return error
