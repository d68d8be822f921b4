"""Whether this node may spawn now: the hold, the settling and the controller's lease, in one place.

An agent must not start anything the controller may have moved elsewhere. Three things say
so, and this object is the only one that knows them:

- **held**: the controller's word is not known, or no longer trusted: from agent start until
  the first assignment is applied, and again from a lost session (silence, a stall) until an
  assignment arrives on the new one;
- **settling**: the agent is adopting or stopping what earlier agents left, at start;
- **the lease**: every fresh message from the controller extends it (``renew``); past
  ``until``, spawning stops even before the link notices the silence.

While any holds, the Manager spawns nothing, not even a respawn: running processes are left
alone, and what should start waits in backoff. When the hold or the settling ends, the
listeners (the Manager) converge again.

The Agent creates the Lease and hands it to the Manager (which reads it), the link (which
renews it and holds it when the session is lost) and keeps release and settling itself. A
Manager without a controller (``gaffer run``, tests, benchmarks) gets a Lease that never holds.
"""

from __future__ import annotations

from typing import Callable


def holding(held: bool, settling: bool, until: float | None, now: float) -> bool:
    """The rule: held, settling, or past a lease (None: there is no lease)."""
    return held or settling or (until is not None and now > until)


class Lease:
    def __init__(self, *, held: bool = False) -> None:
        self.held = held
        self.settling = False
        self.until: float | None = None
        self._listeners: list[Callable[[], None]] = []

    def holding(self, now: float) -> bool:
        return holding(self.held, self.settling, self.until, now)

    def on_free(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` whenever the hold or the settling ends."""
        self._listeners.append(listener)

    def renew(self, until: float) -> None:
        """The controller spoke: its word holds until ``until`` (a loop time)."""
        self.until = until

    def hold(self) -> None:
        """Spawn nothing new until ``release`` (the session was lost)."""
        self.held = True

    def release(self) -> None:
        """The controller's assignment is applied: spawning may go on."""
        self.held = False
        self._freed()

    def settle(self, settling: bool) -> None:
        """Spawn nothing while ``settling`` (adopting or stopping what was found at start)."""
        self.settling = settling
        if not settling:
            self._freed()

    def _freed(self) -> None:
        for listener in self._listeners:
            listener()
