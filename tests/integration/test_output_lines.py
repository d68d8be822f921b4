"""Dropped output is visible (issue 10): every line a process prints reaches a follower or is
counted where it went missing, by its number, and the log file keeps them all.

Real daemons (``gaffer-controller``, ``gaffer-agent``) and the real ``gafferctl logs -f``.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from test_output_flood import BIN, TIMEOUT, Daemons, daemons  # noqa: F401 (the fixture)

COUNT = 200_000
SEQ = r"""
import os, select, sys
while not select.select([0], [], [], 0.05)[0]:
    os.write(2, b"ready\n")
os.read(0, 64)
os.execvp("seq", ["seq", "1", sys.argv[1]])
"""
"""Says ``ready`` on stderr until it reads a line on stdin, then becomes ``seq 1 COUNT``."""


class Followed:
    """What ``gafferctl logs -f --json`` wrote, read as it grows: the out stream's lines and
    gaps, checked to follow on from 1 without a hole."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.ready = False
        self.next = 1
        self.delivered = 0
        self.skipped = 0
        self.gaps = 0

    def read(self) -> None:
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        end = data.rfind(b"\n") + 1
        self.offset += end
        for row in data[:end].splitlines():
            self._take(json.loads(row))

    def _take(self, item: dict[str, Any]) -> None:
        assert item["id"] == "seq.1" and item["node"] == "n1"
        if item["stream"] == "err":
            self.ready = True
            return
        if "skipped" in item:
            assert item["skipped"] > 0
            self.next += item["skipped"]
            self.skipped += item["skipped"]
            self.gaps += 1
            return
        assert item["number"] == self.next, f"line {item['number']} where {self.next} was due"
        assert item["line"] == str(self.next)
        self.next += 1
        self.delivered += 1

    def until(self, check: Any, what: str) -> Any:
        async def poll() -> None:
            deadline = time.monotonic() + TIMEOUT
            while True:
                self.read()
                if check():
                    return
                assert time.monotonic() < deadline, f"no {what} within {TIMEOUT:.0f}s"
                await asyncio.sleep(0.05)  # poll the growing file

        return poll()


def log_numbers(path: Path) -> list[int]:
    """The numbers seq wrote, from the instance's log file (``<stamp> out <text>`` lines)."""
    return [int(line.split(b" ", 2)[2]) for line in path.read_bytes().splitlines() if line.split(b" ", 2)[1] == b"out"]


async def test_seq_lines_are_delivered_or_counted_and_all_logged(daemons: Daemons, tmp_path: Path) -> None:
    """`seq 1 200000` followed by `gafferctl logs -f`: delivered + skipped = 200000, numbers
    contiguous from 1, and the log file holds every line."""
    logs = tmp_path / "logs"
    await daemons.call("apply", templates=[{
        "name": "seq", "cmd": sys.executable, "args": ["-c", SEQ, str(COUNT)], "numprocesses": 1,
        "startsecs": 0, "restart": "never", "redirect_input": True, "log": {"dir": str(logs)},
    }])
    out = tmp_path / "follow.jsonl"
    with open(out, "wb") as sink:
        ctl = subprocess.Popen(
            [str(BIN / "gafferctl"), "--controller", daemons.endpoint, "logs", "seq", "-f", "-n", "0", "--json"],
            stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.PIPE, start_new_session=True,
        )
    followed = Followed(out)
    try:
        await followed.until(lambda: followed.ready, "ready line from seq.1")
        await daemons.call("write", id="seq.1", data="go\n")
        await followed.until(lambda: followed.next > COUNT, f"accounting for all {COUNT} lines")
    finally:
        ctl.send_signal(signal.SIGINT)
        try:
            _, err = ctl.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            ctl.kill()
            _, err = ctl.communicate()
    assert not err.strip(), err.decode(errors="replace")
    assert followed.next == COUNT + 1
    assert followed.delivered + followed.skipped == COUNT
    assert followed.delivered > 0 and followed.gaps > 0

    async def logged() -> bool:
        return len(log_numbers(logs / "seq.1.log")) >= COUNT

    deadline = time.monotonic() + TIMEOUT
    while not await logged():
        assert time.monotonic() < deadline, "the log file never held every line"
        await asyncio.sleep(0.05)  # poll
    assert log_numbers(logs / "seq.1.log") == list(range(1, COUNT + 1))
