"""Ending background tasks: cancel, then wait until they really are done.

Awaiting a task that was just cancelled raises CancelledError, and so does cancelling the
task that awaits it: asyncio passes the caller's cancellation on to the awaited task, and
both end in the same exception. ``cancel_and_wait`` swallows only the first. It tells the two
apart by the caller's own count of cancellation requests (``Task.cancelling()``, as
``asyncio.timeout`` does): a request that arrived while it waited is the caller's, and is
raised again once the task is done, even when the task swallowed it and returned. A caller
that was already being cancelled when it called (a cleanup in ``finally``) keeps its
cleanup going: only requests newer than the call count.
"""

from __future__ import annotations

import asyncio


async def cancel_and_wait(task: asyncio.Task | None) -> None:
    """Cancel ``task`` and wait for it, so nothing it owns is used after its owner stops.

    Raises CancelledError when the caller itself is cancelled meanwhile (after waiting for
    ``task`` to finish), and whatever ``task`` raised other than its own cancellation.
    """
    if task is None or task.done():
        return
    caller = asyncio.current_task()
    before = caller.cancelling() if caller is not None else 0
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        if _cancelled_since(caller, before):
            raise
        return
    if _cancelled_since(caller, before):
        raise asyncio.CancelledError


def _cancelled_since(caller: asyncio.Task | None, before: int) -> bool:
    """Whether ``caller`` got a cancellation request it has not taken back since the count."""
    return caller is not None and caller.cancelling() > before
