"""The spawn journal: what it keeps, and how it reads back after a crash."""

from __future__ import annotations

from pathlib import Path

from gaffer.agent import journal


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
