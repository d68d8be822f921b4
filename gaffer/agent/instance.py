"""The Manager's record of one instance (``<template>.<ordinal>``) across its respawns."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from gaffer.agent.lifecycle import Repeats, State, check_transition
from gaffer.agent.output import LineSplitter, RingBuffer, RotatingLog
from gaffer.agent.process import ExitStatus, Process
from gaffer.common.topics import instance_id


@dataclass(eq=False)
class Instance:
    template: str
    ordinal: int | str
    state: State = State.STOPPED
    process: Process | None = None
    restarts: int = 0
    failures: int = 0
    spec_hash: str | None = None
    restart_gen: int = 0
    started_at: float | None = None
    last_exit: ExitStatus | None = None
    error: str | None = None
    repeats: Repeats | None = None
    """The spawn error this instance keeps hitting, and how often (reported once)."""
    oneoff: bool = False
    timer: asyncio.TimerHandle | None = None
    kill_timer: asyncio.TimerHandle | None = None
    output: RingBuffer = field(default_factory=RingBuffer)
    splitters: dict[str, LineSplitter] = field(default_factory=dict)
    log: RotatingLog | None = None
    done: asyncio.Future | None = None

    @property
    def id(self) -> str:
        return instance_id(self.template, self.ordinal)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None and self.process.alive else None

    def move(self, new: State) -> State:
        """Change state after checking the move is legal; returns the old state."""
        old = self.state
        if old is not new:
            check_transition(old, new)
            self.state = new
        return old

    def cancel_timers(self) -> None:
        for name in ("timer", "kill_timer"):
            handle = getattr(self, name)
            if handle is not None:
                handle.cancel()
                setattr(self, name, None)

    def info(self, node: str, now: float | None = None) -> dict[str, Any]:
        now = time.time() if now is None else now
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
        }
