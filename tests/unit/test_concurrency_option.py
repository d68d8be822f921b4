"""``-c/--concurrency`` as honcho takes it (``web=2,worker=3``), and ``-p/--port`` (issue 9:
"Concurrency and base port")."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from gaffer.cli import start as gaffer_cli
from gaffer.common.errors import ConfigError
from gaffer.common.procfile_options import parse_concurrency, parse_concurrency_options

NAMES = st.from_regex(r"[a-z][a-z0-9_-]{0,10}", fullmatch=True)


class TestParseConcurrency:
    @pytest.mark.parametrize(("text", "counts"), [
        ("web=2", {"web": 2}),
        ("web=2,worker=3", {"web": 2, "worker": 3}),
        ("web=2, worker=3", {"web": 2, "worker": 3}),
        ("web=0", {"web": 0}),
        ("web=1000000", {"web": 1_000_000}),
    ])
    def test_the_comma_form_honcho_accepts(self, text, counts) -> None:
        """NAME=N parts separated by commas; 0 runs none of that type."""
        assert parse_concurrency(text) == counts

    @pytest.mark.parametrize(("text", "says"), [
        ("web", "--concurrency: expected NAME=COUNT, got 'web'"),
        ("web=2,", "--concurrency: expected NAME=COUNT, got ''"),
        ("=2", "--concurrency: expected NAME=COUNT, got '=2'"),
        ("web.1=2", "--concurrency: expected NAME=COUNT, got 'web.1=2'"),
        ("web=two", "--concurrency: web: the count must be a whole number 0..1,000,000, got 'web=two'"),
        ("web=-1", "--concurrency: web: the count must be a whole number 0..1,000,000, got 'web=-1'"),
        ("web=1000001", "--concurrency: web: the count must be at most 1,000,000, got 'web=1000001'"),
        ("web=" + "9" * 5000, "--concurrency: web: the count must be at most 1,000,000, got a part of 5004 characters"),
        ("web=1,web=2", "--concurrency: web is given twice"),
    ])
    def test_a_bad_part_is_refused_naming_it(self, text, says) -> None:
        """Each bad part is one ConfigError line quoting that part (honcho: a traceback)."""
        with pytest.raises(ConfigError) as info:
            parse_concurrency(text)
        assert info.value.message == says

    def test_repeated_options_are_one_list(self) -> None:
        """-c web=2 -c worker=3 is -c web=2,worker=3; none given is no override."""
        assert parse_concurrency_options(["web=2", "worker=3,clock=1"]) == {"web": 2, "worker": 3, "clock": 1}
        assert parse_concurrency_options([]) == {}

    @given(st.dictionaries(NAMES, st.integers(0, 1_000_000), min_size=1, max_size=10))
    def test_written_counts_read_back(self, counts) -> None:
        """Any counts written in the comma form parse back to themselves."""
        assert parse_concurrency(",".join(f"{k}={v}" for k, v in counts.items())) == counts


class TestStartOptions:
    def refused(self, *args: str) -> str:
        result = CliRunner().invoke(gaffer_cli.main, ["start", *args])
        assert result.exit_code == 2, result.output
        assert "Traceback" not in result.output
        return result.stderr.strip().splitlines()[-1]

    @pytest.mark.parametrize(("args", "says"), [
        (("-p", "0"), "Invalid value for '-p' / '--port': must be >= 1, got 0"),
        (("-p", "65536"), "Invalid value for '-p' / '--port': must be at most 65535, got 65536"),
        (("--port", "http"), "Invalid value for '-p' / '--port': expected an integer, got 'http'"),
        (("-c", "web=2,worker"), "Invalid value for --concurrency: expected NAME=COUNT, got 'worker'"),
        (("-c", "web=2", "-c", "web=3"), "Invalid value for --concurrency: web is given twice"),
    ])
    def test_bad_values_are_usage_errors_naming_the_option(self, args, says) -> None:
        """-p out of 1..65535 and a bad -c part exit 2 with one line, before any file is read."""
        assert says in self.refused(*args)
