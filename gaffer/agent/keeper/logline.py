"""The keeper's log lines on stderr, written without the ``logging`` package.

The keeper is a long-lived process of its own on every host, and it must stay small (issue 9:
under 10 MB): ``logging`` brings ``threading``, ``traceback`` and ``string`` along (about 1 MB)
for the few lines a keeper writes in its life. The lines keep the format ``logging`` gave
them: ``2026-11-29 16:31:31,123 keeper[PID] INFO: message``.
"""

from __future__ import annotations

import os
import sys
import time


class KeeperLog:
    """``info`` / ``warning`` / ``error`` with ``%``-style arguments, as a logger takes them."""

    def info(self, message: str, *args: object) -> None:
        self._write("INFO", message, args)

    def warning(self, message: str, *args: object) -> None:
        self._write("WARNING", message, args)

    def error(self, message: str, *args: object) -> None:
        self._write("ERROR", message, args)

    def _write(self, level: str, message: str, args: tuple[object, ...]) -> None:
        now = time.time()
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now))
        try:
            text = message % args if args else message
        except (TypeError, ValueError):
            text = f"{message} {args!r}"
        line = f"{stamp},{int(now % 1 * 1000):03d} keeper[{os.getpid()}] {level}: {text}\n"
        try:
            sys.stderr.write(line)
            sys.stderr.flush()
        except (OSError, ValueError, AttributeError):
            pass  # no stderr left (closed, or None): the keeper holds pipes, it never dies of a log line


log = KeeperLog()
