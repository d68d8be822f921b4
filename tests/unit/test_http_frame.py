"""The HTTP API's pure pieces: the --http address, the TLS rule, bearer parsing and the
status each error code answers with (issue 11)."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from gaffer.common import errors
from gaffer.common.errors import ConfigError, GafferError
from gaffer.controller.http.access import bearer
from gaffer.controller.http.address import HttpAddress, parse_http
from gaffer.controller.http.problems import STATUS_BY_CODE, status_of
from gaffer.controller.http.server import require_http_protection


@pytest.mark.parametrize("text, expected", [
    ("127.0.0.1:6080", HttpAddress("127.0.0.1", 6080)),
    ("[::1]:80", HttpAddress("::1", 80)),
    ("localhost:0", HttpAddress("localhost", 0)),
    ("off", None),
])
def test_http_addresses_parse(text, expected):
    """HOST:PORT, [v6]:PORT and 'off' are the accepted forms."""
    assert parse_http(text) == expected


@pytest.mark.parametrize("text", ["", "6080", "host:", ":80", "h:65536", "h:-1", "h:x", None, 80, "a" * 400])
def test_bad_http_addresses_name_the_option(text):
    """Anything else is a ConfigError naming --http and the accepted forms."""
    with pytest.raises(ConfigError, match="--http: expected HOST:PORT"):
        parse_http(text)


def test_plain_http_is_refused_off_loopback_only():
    """Loopback may be plain; another address needs TLS or --insecure."""
    require_http_protection(HttpAddress("127.0.0.1", 1), tls=False, insecure=False)
    require_http_protection(HttpAddress("::1", 1), tls=False, insecure=False)
    require_http_protection(HttpAddress("0.0.0.0", 1), tls=True, insecure=False)
    require_http_protection(HttpAddress("0.0.0.0", 1), tls=False, insecure=True)
    with pytest.raises(ConfigError, match="--insecure"):
        require_http_protection(HttpAddress("10.0.0.1", 1), tls=False, insecure=False)


def test_bearer_takes_the_token_of_a_bearer_header_only():
    """The scheme is case-insensitive; other schemes, empty and oversized headers give None."""
    assert bearer("Bearer abc") == "abc"
    assert bearer("bearer  abc ") == "abc"
    assert bearer("Basic abc") is None
    assert bearer("Bearer") is None
    assert bearer(None) is None
    assert bearer("Bearer " + "a" * 600) is None


@given(st.text(max_size=700))
def test_bearer_never_raises(header):
    """Whatever the header holds, parsing it never raises."""
    bearer(header)


def every_code() -> set[str]:
    found, stack = set(), [GafferError]
    while stack:
        cls = stack.pop()
        found.add(cls.code)
        stack.extend(cls.__subclasses__())
    return found - {errors.RemoteError.code}


def test_input_errors_are_4xx_and_only_bugs_are_500():
    """Every code a user's input can cause maps to a 4xx; unknown codes are 500."""
    for code in every_code():
        if code.startswith(("invalid_", "stdin_")) or code.endswith("_not_found") or code in (
            "limit_exceeded", "forbidden", "unauthorized", "throttled", "too_large", "template_exists",
        ):
            assert 400 <= status_of(code) < 500, code
    assert status_of("error") == 500
    assert set(STATUS_BY_CODE) >= {"unauthorized", "forbidden", "throttled"}
