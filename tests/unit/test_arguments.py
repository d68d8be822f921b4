"""Request arguments from the wire: type, length, pattern and range, named when wrong."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gaffer.common import arguments as arg
from gaffer.common.errors import InvalidArgument
from budget import examples

PLAIN = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=80), st.binary(max_size=8)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)),
    max_leaves=6,
)


def refused(check, args: dict, *extra) -> str:
    with pytest.raises(InvalidArgument) as info:
        check(args, *extra)
    return info.value.message


class TestNames:
    @pytest.mark.parametrize("value", ["", "a.b", "-a", "é", "x" * 65, "a b", "a\nb", 5, None, ["a"]])
    def test_bad_template_and_node_names_are_refused(self, value) -> None:
        """Names follow NAME_RE (64 characters, no dots); anything else names the argument."""
        message = refused(arg.name, {"name": value})
        assert message.startswith("argument 'name': ")
        node_message = refused(arg.node, {"node": value})
        assert node_message.startswith("argument 'node': ")

    def test_a_huge_name_is_described_not_echoed(self) -> None:
        """A 60,000-character node name is reported by its length."""
        message = refused(arg.node, {"node": "n" * 60_000})
        assert "a string of 60000 characters is not a node name" in message and len(message) < 200

    def test_good_names_and_defaults(self) -> None:
        """Valid names pass; an absent optional one gives its default."""
        assert arg.name({"name": "web-1_a"}) == "web-1_a"
        assert arg.node({}, default=None) is None
        assert refused(arg.name, {}) == "argument 'name': is required"

    @pytest.mark.parametrize("value", ["web.1", "web.1000000", "a-b.run-12"])
    def test_instance_ids(self, value: str) -> None:
        """<template>.<ordinal> with an ordinal 1..1,000,000, or <template>.run-<n>."""
        assert arg.instance_id({"id": value}) == value
        assert arg.target({"target": value}) == value

    @pytest.mark.parametrize("value", ["web", "web.0", "web.01", "web.1000001", "a.b.1", ".1", "web.run-", "web.x"])
    def test_bad_instance_ids(self, value: str) -> None:
        """Anything else is refused with the expected form."""
        assert "must be an instance id <template>.<ordinal>" in refused(arg.instance_id, {"id": value})


class TestNumbers:
    @pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
    def test_seconds_are_never_nan_or_infinite(self, value: float) -> None:
        """A NaN wait spun a core forever; now it is refused by name."""
        assert refused(arg.seconds, {"seconds": value}, "seconds", 30.0) == (
            f"argument 'seconds': must be a finite number of seconds, got {value!r}"
        )

    @pytest.mark.parametrize("value", [-1, 86_401, 10**30, True, "5"])
    def test_seconds_out_of_range_or_of_the_wrong_type(self, value) -> None:
        """Seconds are numbers in 0..86400."""
        assert refused(arg.seconds, {"wait": value}, "wait", 60.0).startswith("argument 'wait': must be a number of seconds")

    def test_integers_booleans_and_counts(self) -> None:
        """Integers are bounded, booleans strict, counts short."""
        assert refused(arg.integer, {"lines": 10**30}, "lines", 100, 0, 100_000).endswith("got a number of 31 digits")
        assert refused(arg.boolean, {"group": 1}, "group", False) == "argument 'group': must be true or false, got 1"
        assert "must be N, +N or -N" in refused(arg.count, {"count": "9" * 100})
        assert arg.count({"count": "+3"}) == "+3"


class TestOthers:
    def test_signals_streams_strings_and_data(self) -> None:
        """Each checker names its argument and never echoes a long value."""
        assert "a string of 5000 characters" in refused(arg.signal, {"signal": "9" * 5000})
        assert "got 0" in refused(arg.signal, {"signal": 0})
        assert arg.signal({}) == "TERM"
        assert "must be \"out\", \"err\" or null" in refused(arg.stream, {"stream": "both"})
        assert refused(arg.strings, {"args": ["a", "b\0"]}, "args").startswith("argument 'args[1]': ")
        assert "at most 4096 strings" in refused(arg.strings, {"args": ["a"] * 5000}, "args")
        assert "must be a string or bytes" in refused(arg.data, {"data": 5})

    @settings(max_examples=examples(500), deadline=None)
    @given(st.dictionaries(st.sampled_from(["name", "node", "id", "target", "seconds", "lines", "group",
                                            "signal", "stream", "args", "data", "count"]), PLAIN))
    def test_any_plain_data_gives_a_value_or_invalid_argument(self, args: dict) -> None:
        """Whatever the wire carries, a check returns a value or raises InvalidArgument."""
        checks = [
            lambda a: arg.name(a), lambda a: arg.node(a), lambda a: arg.instance_id(a),
            lambda a: arg.target(a), lambda a: arg.seconds(a, "seconds", 1.0),
            lambda a: arg.integer(a, "lines", 1, 0, 10), lambda a: arg.boolean(a, "group", False),
            lambda a: arg.signal(a), lambda a: arg.stream(a), lambda a: arg.strings(a, "args"),
            lambda a: arg.data(a), lambda a: arg.count(a),
        ]
        for check in checks:
            try:
                value = check(args)
            except InvalidArgument as exc:
                assert len(exc.message) < 400
                continue
            if isinstance(value, float):
                assert math.isfinite(value)
