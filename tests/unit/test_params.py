"""Click types for numbers: finite, bounded, one short line when refused."""

from __future__ import annotations

import math

import click
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from gaffer.common.params import BoundedInt, FiniteFloat
from budget import examples


@click.command()
@click.option("--wait", type=FiniteFloat(0.0, 100.0))
@click.option("--timeout", type=FiniteFloat(0.0, 100.0, open_low=True))
@click.option("--count", type=BoundedInt(1, 1000))
def probe(wait: float | None, timeout: float | None, count: int | None) -> None:
    click.echo(f"{wait!r} {timeout!r} {count!r}")


def run(*args: str):
    return CliRunner().invoke(probe, list(args))


class TestFiniteFloat:
    @pytest.mark.parametrize("text", ["nan", "NaN", "inf", "-inf", "Infinity", "1e400"])
    def test_nan_and_infinities_are_refused(self, text: str) -> None:
        """click's FloatRange lets these through; this type does not."""
        done = run("--wait", text)
        assert done.exit_code == 2
        assert f"Invalid value for '--wait': must be a finite number, got '{text}'" in done.output

    @pytest.mark.parametrize(("args", "message"), [
        (("--wait", "-1"), "must be >= 0, got -1"),
        (("--wait", "101"), "must be at most 100, got 101"),
        (("--timeout", "0"), "must be > 0, got 0"),
        (("--wait", "soon"), "expected a number, got 'soon'"),
        (("--wait", "1" * 500), "expected a number, got 500 characters"),
    ])
    def test_bounds_and_garbage(self, args: tuple[str, ...], message: str) -> None:
        """Out of range or not a number: exit 2 and one line naming the option."""
        done = run(*args)
        assert done.exit_code == 2 and message in done.output

    def test_good_values(self) -> None:
        """Numbers in range come through as floats."""
        assert run("--wait", "0", "--timeout", "2.5").output == "0.0 2.5 None\n"


class TestBoundedInt:
    @pytest.mark.parametrize(("text", "message"), [
        ("0", "must be >= 1, got 0"),
        ("1001", "must be at most 1000, got 1001"),
        ("9" * 5000, "must be at most 1000, got a number of 5000 digits"),
        ("1e3", "expected an integer, got '1e3'"),
        ("nan", "expected an integer, got 'nan'"),
        ("١٢", "expected an integer, got '١٢'"),
    ])
    def test_refused(self, text: str, message: str) -> None:
        """Anything but plain digits in range is one short line."""
        done = run("--count", text)
        assert done.exit_code == 2 and message in done.output and len(done.output) < 400

    @settings(max_examples=examples(300), deadline=None)
    @given(st.text(max_size=60))
    def test_any_text_converts_or_fails_cleanly(self, text: str) -> None:
        """No input makes either type raise anything but click's usage error."""
        for option in ("--wait", "--timeout", "--count"):
            done = run(option, text)
            assert done.exit_code in (0, 2), done.output
            assert done.exception is None or isinstance(done.exception, SystemExit)
            if done.exit_code == 0 and option != "--count":
                assert all(math.isfinite(float(v)) for v in done.output.split() if v != "None")
