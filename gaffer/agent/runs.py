"""One-off runs of a template (``gafferctl run``, ``gaffer run``): spawned once, never restarted.

They live beside the template's instances, with ids ``<template>.run-<n>``, and stay listed
(with their output) until KEEP newer runs have ended.
"""

from __future__ import annotations

from typing import Iterator

from gaffer.agent.instance import Instance

KEEP = 10


class Runs:
    __slots__ = ("_runs", "_seq")

    def __init__(self) -> None:
        self._runs: dict[str, Instance] = {}
        self._seq = 0

    def new(self, template: str) -> Instance:
        self._seq += 1
        inst = Instance(template, f"run-{self._seq}", oneoff=True)
        self._runs[str(inst.ordinal)] = inst
        return inst

    def discard(self, inst: Instance) -> None:
        self._runs.pop(str(inst.ordinal), None)

    def get(self, key: str) -> Instance | None:
        return self._runs.get(key)

    def __iter__(self) -> Iterator[Instance]:
        return iter(list(self._runs.values()))

    def alive(self) -> bool:
        """Whether a run still has a live process."""
        return any(inst.pid for inst in self._runs.values())

    def ended(self) -> None:
        """A run ended: forget the oldest finished ones beyond KEEP."""
        finished = [key for key, inst in self._runs.items() if inst.process is None]
        for key in finished[: max(0, len(finished) - KEEP)]:
            self._runs.pop(key).output.close()
