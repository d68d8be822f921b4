"""The stats sampler's walk of the process table (gaffer.agent.stats)."""

from __future__ import annotations

import os

import psutil

from gaffer.agent.stats import StatsSampler


async def test_stats_find_children_in_proc_not_through_psutils_process_table(monkeypatch):
    """A sample reads /proc for children: psutil.process_iter, whose module-level cache keeps a
    handle on every process of the host for the agent's life, is never called (issue 9, item 12)."""

    def refuse(*args, **kwargs):
        raise AssertionError("psutil.process_iter was called")

    monkeypatch.setattr(psutil, "process_iter", refuse)
    sampled = await StatsSampler().sample([os.getpid()])
    assert list(sampled) == [os.getpid()]
    assert sampled[os.getpid()].mem > 0 and sampled[os.getpid()].cmdline
