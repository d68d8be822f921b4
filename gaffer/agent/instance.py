"""The Manager's record of one instance (``<template>.<ordinal>``) across its respawns."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from gaffer.agent.capture import Capture
from gaffer.agent.flapping import FlapState
from gaffer.agent.lifecycle import Event, Life, Repeats, State, check_transition, next_state
from gaffer.agent.process import ExitStatus
from gaffer.agent.processes import Proc
from gaffer.common.topics import instance_id

Handle = asyncio.Handle | asyncio.TimerHandle


@dataclass(eq=False)
class Instance:
    template: str
    ordinal: int | str
    state: State = State.STOPPED
    process: Proc | None = None
    incarnation: int = 0
    """Counts the processes this instance had: an exit or a timer of an earlier one is ignored."""
    restarts: int = 0
    failures: int = 0
    spec_hash: str | None = None
    restart_gen: int = 0
    started_at: float | None = None
    last_exit: ExitStatus | None = None
    error: str | None = None
    repeats: Repeats | None = None
    """The spawn error this instance keeps hitting, and how often (reported once)."""
    flap: FlapState = field(default_factory=FlapState)
    """Its crash-loop history (``flapping``): each instance is suspended and gives up alone."""
    oneoff: bool = False
    gated: bool = False
    """Its template has a check or ``notify``: ``running`` is not yet ready."""
    unhealthy_stop: bool = False
    """Stopped because it turned unhealthy: its exit respawns it, and counts for flapping."""
    timer: Handle | None = None
    """The respawn timer while in backoff (after a backoff delay, or at the end of a flapping
    suspension), or the ``startsecs`` timer while starting."""
    kill_timer: Handle | None = None
    output: Capture = field(default_factory=Capture)
    done: asyncio.Future | None = None

    @property
    def id(self) -> str:
        return instance_id(self.template, self.ordinal)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None and self.process.alive else None

    @property
    def waiting(self) -> bool:
        """In backoff with no respawn timer: it starts at the next converge that may spawn."""
        return self.state is State.BACKOFF and self.timer is None

    def suspended(self, now: float) -> bool:
        """In backoff until its flapping suspension ends (its timer resumes it)."""
        return self.state is State.BACKOFF and self.flap.suspended(now)

    @property
    def ready(self) -> bool:
        """The row's ``ready`` (what every consumer reads): ready, or running with nothing to wait for."""
        state = self.state
        return state is State.READY or (state is State.RUNNING and not self.gated)

    @property
    def life(self) -> Life:
        return Life(self.state, self.failures, self.restarts)

    def live(self, life: Life) -> None:
        """Take the state and counters an exit decision gave."""
        self.move(life.state)
        self.failures = life.failures
        self.restarts = life.restarts

    def take(self, event: Event) -> None:
        """Move as ``event`` says (``lifecycle.next_state``: IllegalTransition if it cannot)."""
        self.state = next_state(self.state, event)

    def move(self, new: State) -> State:
        """Change state after checking the move is legal; returns the old state."""
        old = self.state
        if old is not new:
            check_transition(old, new)
            self.state = new
        return old

    def cancel_timers(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.kill_timer is not None:
            self.kill_timer.cancel()
            self.kill_timer = None

    def event(self, node: str, ts: float, **extra: Any) -> dict[str, Any]:
        """The payload of a ``proc.<template>.<kind>`` event about this instance."""
        data = {
            "node": node,
            "template": self.template,
            "id": self.id,
            "ordinal": self.ordinal,
            "pid": self.pid,
            "ts": ts,
        }
        data.update(extra)
        return data

    def info(self, node: str, now: float) -> dict[str, Any]:
        pid = self.pid
        return {
            "id": self.id,
            "template": self.template,
            "ordinal": self.ordinal,
            "node": node,
            "pid": pid,
            "state": self.state.value,
            "restarts": self.restarts,
            "started_at": self.started_at if pid else None,
            "uptime": round(now - self.started_at, 3) if pid and self.started_at else None,
            "last_exit": self.last_exit.to_dict() if self.last_exit else None,
            "error": self.error,
            "spec": self.spec_hash,
            "oneoff": self.oneoff,
            "ready": self.ready,
        }
