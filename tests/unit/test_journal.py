"""The spawn journal: what it keeps, and how it reads back after a crash."""

from __future__ import annotations

import os
from pathlib import Path

from gaffer.agent import adoption, journal
from gaffer.testing import loop_turn


def test_live_entries_are_spawns_without_an_exit(tmp_path: Path) -> None:
    """An exit cancels its spawn; a torn last line is ignored."""
    path = tmp_path / "j"
    path.write_text("+ web.1 100 5 abc\n+ web.2 101 6 -\n- web.1 100\n+ web.3 102 7 d")
    assert journal.read(path) == [journal.Entry("web.2", 101, 6, None)]


def test_rewrite_keeps_only_what_it_is_given(tmp_path: Path) -> None:
    """After a rewrite the journal holds the live set and keeps appending."""
    book = journal.Journal(tmp_path / "j")
    book.exited("old.1", 5)
    book.rewrite([journal.Entry("web.1", 10, 20, "abc")])
    book.exited("web.1", 10)
    book.close()
    assert journal.read(tmp_path / "j") == []


class _Proc:
    """What the journal reads of a process: its pid."""

    def __init__(self, pid: int) -> None:
        self.pid = pid


async def test_spawns_of_one_loop_turn_are_written_together_after_it(tmp_path: Path) -> None:
    """A spawn is written at the end of its loop turn (its /proc stat is cheap to read by
    then), with every other spawn of that turn in one write."""
    book = journal.Journal(tmp_path / "j")
    me = os.getpid()
    book.on_spawn("web.1", _Proc(me), "abc", oneoff=False)
    book.on_spawn("web.2", _Proc(me), None, oneoff=False)
    assert (tmp_path / "j").read_text() == ""
    await loop_turn()
    ticks = adoption.read_stat(me).start_ticks
    assert (tmp_path / "j").read_text() == f"+ web.1 {me} {ticks} abc\n+ web.2 {me} {ticks} -\n"
    book.close()


async def test_an_exit_before_the_write_drops_its_spawn_and_keeps_the_others(tmp_path: Path) -> None:
    """An exit in the same turn as its spawn writes the other spawns first and only its own
    exit line (its pid is reaped by then: its stat could be another process's)."""
    book = journal.Journal(tmp_path / "j")
    me = os.getpid()
    book.on_spawn("web.1", _Proc(me), "abc", oneoff=False)
    book.on_spawn("web.2", _Proc(me + 1_000_000), "abc", oneoff=False)
    book.on_exit("web.2", _Proc(me + 1_000_000), oneoff=False)
    ticks = adoption.read_stat(me).start_ticks
    assert (tmp_path / "j").read_text() == f"+ web.1 {me} {ticks} abc\n- web.2 {me + 1_000_000}\n"
    book.close()
    assert journal.read(tmp_path / "j") == [journal.Entry("web.1", me, ticks, "abc")]


async def test_closing_writes_the_spawns_still_noted(tmp_path: Path) -> None:
    """Nothing noted is lost when the agent closes the journal before the loop turn ends."""
    book = journal.Journal(tmp_path / "j")
    book.on_spawn("web.1", _Proc(os.getpid()), None, oneoff=False)
    book.close()
    await loop_turn()
    assert [e.instance_id for e in journal.read(tmp_path / "j")] == ["web.1"]
