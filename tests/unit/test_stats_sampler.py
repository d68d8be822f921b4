"""The stats sampler (gaffer.agent.stats) and its /proc reader (gaffer.agent.proctable)."""

from __future__ import annotations

import os

import psutil
from hypothesis import given, strategies as st

from gaffer.agent import proctable
from gaffer.agent.proctable import ProcSample, Seen, cpu_percent, measure, parse
from gaffer.agent.stats import StatsSampler

HZ = 100
STAT = (b"4242 (we ird) (x)) S 1 4242 4242 0 -1 4194560 300 0 0 0 150 50 0 0 20 0 1 0 "
        b"9000 12345678 321 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0")


def refuse(*args, **kwargs):
    raise AssertionError("psutil was used")


async def test_stats_find_children_in_proc_not_through_psutils_process_table(monkeypatch):
    """A sample reads /proc for children: psutil.process_iter, whose module-level cache keeps a
    handle on every process of the host for the agent's life, is never called (issue 9, item 12)."""
    monkeypatch.setattr(psutil, "process_iter", refuse)
    sampled = await StatsSampler().sample([os.getpid()])
    assert list(sampled) == [os.getpid()]
    assert sampled[os.getpid()].mem > 0 and sampled[os.getpid()].cmdline


async def test_a_sample_reads_proc_without_a_psutil_process_per_pid(monkeypatch):
    """The sampler reads /proc/<pid>/stat itself: no psutil.Process is made for a known pid
    (one costs about 4x a stat read), and the memory it reports is psutil's RSS (issue 11)."""
    rss = psutil.Process().memory_info().rss
    monkeypatch.setattr(psutil, "Process", refuse)
    sampled = await StatsSampler().sample([os.getpid()])
    assert abs(sampled[os.getpid()].mem - rss) < 8 * 2**20
    assert sampled[os.getpid()].cmdline


def test_stat_is_parsed_after_the_last_parenthesis():
    """A command name with spaces and ')' does not shift the fields: ppid, utime + stime in
    ticks, rss in bytes (pages times the page size) and the start time."""
    assert parse(STAT, page=4096) == ProcSample(ppid=1, ticks=200, rss=321 * 4096, start=9000)


def test_cpu_is_measured_since_the_last_sample_of_the_same_process():
    """Ticks over the time since the last sample; a process not seen before, or a new one
    under a reused pid (another start time), is measured since it started."""
    now = ProcSample(ppid=1, ticks=250, rss=0, start=1000)
    assert cpu_percent(Seen(1000, 200, 20.0), now, 21.0, HZ) == 50.0
    assert cpu_percent(Seen(999, 200, 20.0), now, 20.0, HZ) == 25.0  # 2.5 s over the 10 s since start
    assert cpu_percent(None, now, 20.0, HZ) == 25.0


@given(st.integers(0, 10**6), st.integers(0, 10**6), st.integers(1, 10**6), st.floats(0, 10**5, allow_nan=False))
def test_cpu_is_never_negative_nor_above_every_core(before, after, start, now):
    """Whatever the ticks and clocks say (a clock read early, ticks that went back), the
    percentage is within 0 and 100 times the cores."""
    sample = ProcSample(ppid=1, ticks=after, rss=0, start=start)
    value = cpu_percent(Seen(start, before, now - 0.5), sample, now, HZ)
    assert 0.0 <= value <= proctable.CPU_CAP


def test_a_measure_covers_descendants_and_keeps_only_what_it_measured():
    """An instance's children and grandchildren come with it; a pid not in the table is left
    out; what is kept for the next sample is exactly the processes measured now."""
    table = {
        10: ProcSample(1, 100, 4096, 500), 11: ProcSample(10, 0, 100, 600),
        12: ProcSample(11, 0, 200, 700), 20: ProcSample(1, 0, 1, 800),
    }
    seen = {10: Seen(500, 50, 9.0), 99: Seen(1, 1, 1.0)}
    readings, kept = measure(table, [10, 30], seen, 10.0, HZ)
    assert list(readings) == [10]
    top = readings[10]
    assert top.cpu == 50.0 and top.rss == 4096
    assert sorted(c.pid for c in top.children) == [11, 12]
    assert set(kept) == {10, 11, 12} and kept[10] == Seen(500, 100, 10.0)


def test_processes_never_seen_are_the_ones_primed():
    """A sample primes the processes it would measure that it has not seen (or that reuse a
    seen pid): an instance's new child is, a known one is not, a stranger is not measured."""
    table = {10: ProcSample(1, 100, 1, 500), 11: ProcSample(10, 7, 1, 600), 20: ProcSample(1, 0, 1, 800)}
    seen = {10: Seen(500, 50, 9.0), 11: Seen(599, 1, 9.0)}
    assert proctable.unseen(table, [10], seen, 10.0) == {11: Seen(600, 7, 10.0)}
    assert proctable.unseen(table, [10], {**seen, 11: Seen(600, 7, 9.0)}, 10.0) == {}
