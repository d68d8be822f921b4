"""cancel_and_wait: the task's own cancellation is swallowed, one aimed at the caller never is."""

from __future__ import annotations

import asyncio

import pytest

from gaffer.common.tasks import cancel_and_wait

TIMEOUT = 5.0


async def _forever(started: asyncio.Event) -> None:
    started.set()
    await asyncio.Event().wait()


async def _slow_to_stop(started: asyncio.Event, stopping: asyncio.Event) -> None:
    """Once cancelled, sets ``stopping`` and ends only when cancelled again."""
    started.set()
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        stopping.set()
        await asyncio.Event().wait()


async def _stubborn(cancelled: asyncio.Event, release: asyncio.Event) -> str:
    """Sets ``cancelled`` at each cancellation and ignores it; returns once ``release`` is set."""
    while not release.is_set():
        try:
            await release.wait()
        except asyncio.CancelledError:
            cancelled.set()
    return "done"


async def _started(coro_factory, *args) -> asyncio.Task:
    started = asyncio.Event()
    task = asyncio.create_task(coro_factory(started, *args))
    await asyncio.wait_for(started.wait(), TIMEOUT)
    return task


class TestCancelAndWait:
    async def test_the_tasks_own_cancellation_is_swallowed(self):
        """Cancelling the task ends it and returns normally; the caller is not left cancelling."""
        task = await _started(_forever)
        await cancel_and_wait(task)
        assert task.cancelled()
        assert asyncio.current_task().cancelling() == 0

    async def test_nothing_to_do_for_none_or_a_finished_task(self):
        """None and a finished task return at once, and a finished task's result stays as it was."""
        await cancel_and_wait(None)
        finished = asyncio.create_task(asyncio.sleep(0, "result"))
        await finished
        await cancel_and_wait(finished)
        assert finished.result() == "result"

    async def test_a_cancelled_caller_is_cancelled_once_the_task_has_ended(self):
        """Cancelling the caller while it waits raises CancelledError in the caller, after the task ended."""
        stopping = asyncio.Event()
        task = await _started(_slow_to_stop, stopping)
        caller = asyncio.create_task(cancel_and_wait(task))
        await asyncio.wait_for(stopping.wait(), TIMEOUT)
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(caller, TIMEOUT)
        assert caller.cancelled() and task.done()

    async def test_the_callers_cancellation_survives_a_task_that_swallows_it(self):
        """A task that ignores cancellation and returns still leaves its caller cancelled, after it returned."""
        cancelled, release = asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(_stubborn(cancelled, release))
        caller = asyncio.create_task(cancel_and_wait(task))
        await asyncio.wait_for(cancelled.wait(), TIMEOUT)
        cancelled.clear()
        caller.cancel()
        await asyncio.wait_for(cancelled.wait(), TIMEOUT)
        assert not caller.done()
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(caller, TIMEOUT)
        assert task.result() == "done"

    async def test_a_cancellation_arriving_as_the_task_ends_is_raised(self):
        """The caller cancelled between the task's end and its own wakeup is still cancelled."""
        cancelled, release = asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(_stubborn(cancelled, release))
        callers: list[asyncio.Task] = []
        task.add_done_callback(lambda _: callers[0].cancel())
        callers.append(asyncio.create_task(cancel_and_wait(task)))
        await asyncio.wait_for(cancelled.wait(), TIMEOUT)
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(callers[0], TIMEOUT)
        assert task.result() == "done"

    async def test_a_cleanup_in_an_already_cancelled_caller_carries_on(self):
        """Called from the cleanup of a cancelled task, it stops each child and the cleanup runs to its end."""
        first = await _started(_forever)
        second = await _started(_forever)
        cleaned: list[str] = []

        async def owner(started: asyncio.Event) -> None:
            started.set()
            try:
                await asyncio.Event().wait()
            finally:
                await cancel_and_wait(first)
                cleaned.append("first")
                await cancel_and_wait(second)
                cleaned.append("second")

        owning = await _started(owner)
        owning.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(owning, TIMEOUT)
        assert cleaned == ["first", "second"]
        assert first.cancelled() and second.cancelled()

    async def test_an_error_of_the_task_reaches_the_caller(self):
        """A task that fails while stopping raises its own error in the caller."""

        async def failing(started: asyncio.Event) -> None:
            started.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                raise RuntimeError("cleanup failed") from None

        task = await _started(failing)
        with pytest.raises(RuntimeError, match="cleanup failed"):
            await cancel_and_wait(task)
