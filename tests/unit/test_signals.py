"""Signal names as operators write them, and the errors for everything else."""

from __future__ import annotations

import signal

import pytest

from gaffer.common.errors import InvalidSignal
from gaffer.common.signals import parse_signal, signal_name


class TestParseSignal:
    @pytest.mark.parametrize(
        "value",
        ["TERM", "SIGTERM", "term", "sigterm", "SigTerm", " TERM ", 15, "15", " 15 "],
    )
    def test_every_spelling_of_term(self, value: object) -> None:
        """Names with or without SIG, any case, padded, and numbers (also as text) all work."""
        assert parse_signal(value) is signal.SIGTERM

    @pytest.mark.parametrize("sig", list(signal.Signals), ids=lambda s: s.name)
    def test_every_signal_round_trips_through_its_short_name(self, sig: signal.Signals) -> None:
        """signal_name and parse_signal are inverses for every signal this host knows."""
        assert parse_signal(signal_name(sig)) is sig
        assert parse_signal(int(sig)) is sig

    def test_alias_resolves_to_the_canonical_signal(self) -> None:
        """IOT is another name of ABRT."""
        assert parse_signal("IOT") is signal.SIGABRT

    @pytest.mark.parametrize(
        ("value", "message"),
        [
            ("BOGUS", "unknown signal 'BOGUS'"),
            ("", "unknown signal ''"),
            ("SIG", "unknown signal 'SIG'"),
            ("-9", "unknown signal '-9'"),
            ("²", "unknown signal '²'"),
            (0, "unknown signal number 0"),
            (-1, "unknown signal number -1"),
            (999, "unknown signal number 999"),
            ("999", "unknown signal number 999"),
            (10**30, f"unknown signal number {10**30}"),
            (True, "unknown signal True"),
            (15.0, "a signal is a name or a number, got float"),
            (None, "a signal is a name or a number, got NoneType"),
            (["TERM"], "a signal is a name or a number, got list"),
        ],
    )
    def test_bad_values_raise_invalid_signal(self, value: object, message: str) -> None:
        """Anything that is not a known signal raises InvalidSignal with a clear message."""
        with pytest.raises(InvalidSignal) as info:
            parse_signal(value)
        assert info.value.message == message
        assert info.value.code == "invalid_signal"


class TestSignalName:
    def test_short_name_without_prefix(self) -> None:
        """Numbers become the short name used in events and tables."""
        assert signal_name(signal.SIGKILL) == "KILL"

    def test_none_stays_none(self) -> None:
        """No signal means no name."""
        assert signal_name(None) is None

    def test_unknown_number_is_shown_as_digits(self) -> None:
        """A number without a name is still displayed."""
        assert signal_name(999) == "999"
