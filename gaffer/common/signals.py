"""Signal names as operators write them ("TERM", "SIGTERM", "term", 15) and back."""

from __future__ import annotations

import signal

from gaffer.common.errors import InvalidSignal

MAX_SIGNAL_NAME = 16


def parse_signal(value: object) -> signal.Signals:
    """Return the signal named or numbered by ``value``; raise InvalidSignal otherwise."""
    if isinstance(value, bool):
        raise InvalidSignal(f"unknown signal {value!r}")
    if isinstance(value, int):
        try:
            return signal.Signals(value)
        except ValueError:
            raise InvalidSignal(f"unknown signal number {value}") from None
    if isinstance(value, str):
        text = value.strip().upper()
        if len(text) > MAX_SIGNAL_NAME or not text.isascii():
            shown = repr(value) if len(value) <= 40 else f"of {len(value)} characters"
            raise InvalidSignal(f"unknown signal {shown}")
        if text.isdecimal():
            return parse_signal(int(text))
        if not text.startswith("SIG"):
            text = "SIG" + text
        try:
            return signal.Signals[text]
        except KeyError:
            raise InvalidSignal(f"unknown signal {value!r}") from None
    raise InvalidSignal(f"a signal is a name or a number, got {type(value).__name__}")


def signal_name(sig: int | None) -> str | None:
    """Short name ("TERM") of a signal number, or None."""
    if sig is None:
        return None
    try:
        return signal.Signals(sig).name.removeprefix("SIG")
    except ValueError:
        return str(sig)
