"""FakeProbes: check results a test sets per instance, for the Manager on fakes."""

from __future__ import annotations

from gaffer.agent.probes import Result, Target
from gaffer.common.healthspec import HealthCheck


class FakeProbes:
    """Answers every check of instance ``<template>.<ordinal>`` (from its environment) with what
    ``set`` said last (by default healthy), at once; counts the checks per instance."""

    def __init__(self) -> None:
        self.results: dict[str, Result] = {}
        self.runs: dict[str, int] = {}

    def set(self, instance_id: str, ok: bool, output: str = "") -> None:
        self.results[instance_id] = Result(ok, output or ("ok" if ok else "failing"))

    async def run(self, check: HealthCheck, target: Target) -> Result:
        key = f"{target.env.get('GAFFER_TEMPLATE')}.{target.env.get('GAFFER_INSTANCE')}"
        self.runs[key] = self.runs.get(key, 0) + 1
        return self.results.get(key, Result(True, "ok"))

