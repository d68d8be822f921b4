"""The keeper's event loop primitive: ``selectors`` cut down to what the keeper uses, on epoll.

``selectors`` brings ``collections`` and ``math`` into a process that must stay under 10 MB,
for a generality (any selector, any file object) the keeper does not use: it needs one epoll
and a handler per descriptor.
"""

from __future__ import annotations

import select

TYPE_CHECKING = False  # typing itself is not imported: see the package docstring
if TYPE_CHECKING:
    from typing import Callable

    Handler = Callable[[int], None]

READ, WRITE = select.EPOLLIN, select.EPOLLOUT


class Poller:
    """The part of ``selectors`` the keeper uses, on epoll: one handler per descriptor, called
    with the events that fired among those it asked for (an error or a hang-up counts as both
    READ and WRITE, as ``selectors`` reports it, so a handler always hears of it)."""

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._watched: dict[int, tuple[int, Handler]] = {}

    def register(self, fd: int, events: int, handler: Handler) -> None:
        self._epoll.register(fd, events)
        self._watched[fd] = (events, handler)

    def modify(self, fd: int, events: int, handler: Handler) -> None:
        self._epoll.modify(fd, events)
        self._watched[fd] = (events, handler)

    def unregister(self, fd: int) -> None:
        del self._watched[fd]
        try:
            self._epoll.unregister(fd)
        except OSError:
            pass  # closed already: epoll forgot it by itself

    def select(self, timeout: float | None) -> list[tuple[Handler, int]]:
        fired = self._epoll.poll(-1 if timeout is None else timeout, max(len(self._watched), 1))
        ready = []
        for fd, got in fired:
            entry = self._watched.get(fd)
            events = ((READ if got & ~WRITE else 0) | (WRITE if got & ~READ else 0)) & (entry[0] if entry else 0)
            if entry is not None and events:
                ready.append((entry[1], events))
        return ready

    def close(self) -> None:
        self._epoll.close()
