"""One-off runs of a template (``gafferctl run``, ``gaffer run``): spawned once, never restarted.

They live beside the template's instances, with ids ``<template>.run-<n>``. A run started
with a lease belongs to its client (``attended``): it is stopped when the lease lapses while
it runs, and forgotten once it lapses after the end. The others stay listed (with their
output) until KEEP newer runs have ended.
"""

from __future__ import annotations

from typing import Iterator

from gaffer.agent import attended
from gaffer.agent.instance import Instance

KEEP = 10


class Runs:
    __slots__ = ("_runs", "_seq", "_expires")

    def __init__(self) -> None:
        self._runs: dict[str, Instance] = {}
        self._seq = 0
        self._expires: dict[str, float] = {}

    def new(self, template: str) -> Instance:
        self._seq += 1
        inst = Instance(template, f"run-{self._seq}", oneoff=True)
        self._runs[str(inst.ordinal)] = inst
        return inst

    def discard(self, inst: Instance) -> None:
        key = str(inst.ordinal)
        self._runs.pop(key, None)
        self._expires.pop(key, None)

    def get(self, key: str) -> Instance | None:
        return self._runs.get(key)

    def __iter__(self) -> Iterator[Instance]:
        return iter(list(self._runs.values()))

    def alive(self) -> bool:
        """Whether a run still has a live process."""
        return any(inst.pid for inst in self._runs.values())

    def lease(self, key: str, now: float, seconds: float) -> bool:
        """Renew (or with 0 end) the lease of run ``key``; False if there is no such run."""
        if key not in self._runs:
            return False
        self._expires[key] = attended.renewed(self._expires.get(key), now, seconds)
        return True

    def views(self) -> list[attended.RunView]:
        return [
            attended.RunView(key, self._expires.get(key), inst.process is not None)
            for key, inst in self._runs.items()
        ]

    def forget(self, key: str) -> None:
        inst = self._runs.pop(key, None)
        self._expires.pop(key, None)
        if inst is not None:
            inst.output.close()

    def ended(self) -> None:
        """A run ended: forget the oldest finished ones beyond KEEP (leased ones go when their
        lease lapses)."""
        finished = [
            key for key, inst in self._runs.items() if inst.process is None and key not in self._expires
        ]
        for key in finished[: max(0, len(finished) - KEEP)]:
            self.forget(key)
