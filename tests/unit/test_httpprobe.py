"""The health check's HTTP GET: the request it sends and how it reads an answer (issue 12)."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from gaffer.agent.httpprobe import BadResponse, parse_answer, request_bytes
from gaffer.common.healthspec import MAX_OUTPUT


def test_a_get_asks_for_the_path_and_query_and_closes():
    """The request line carries path and query; Host keeps the port; Connection: close."""
    host, port, tls, request = request_bytes("http://127.0.0.1:8080/healthz?deep=1")
    assert (host, port, tls) == ("127.0.0.1", 8080, False)
    assert request.startswith(b"GET /healthz?deep=1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n")
    assert b"Connection: close\r\n" in request and request.endswith(b"\r\n\r\n")


def test_https_and_default_ports():
    """https defaults to 443 over TLS, http to 80; an empty path is /."""
    assert request_bytes("https://example.invalid")[:3] == ("example.invalid", 443, True)
    _, port, tls, request = request_bytes("http://[::1]")
    assert (port, tls) == (80, False) and request.startswith(b"GET / HTTP/1.1\r\nHost: [::1]\r\n")


@pytest.mark.parametrize("url", ["ftp://host/", "http://", "/healthz", "localhost:80"])
def test_urls_it_cannot_use_are_refused(url):
    """Anything but an http(s) URL with a host is a ValueError (a failed check, said why)."""
    with pytest.raises(ValueError):
        request_bytes(url)


def test_an_answer_gives_status_reason_and_the_first_body_bytes():
    """Status and reason from the status line; the body after the head, cut at MAX_OUTPUT."""
    raw = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n\r\n" + b"x" * (MAX_OUTPUT + 10)
    answer = parse_answer(raw)
    assert (answer.status, answer.reason) == (503, "Service Unavailable")
    assert answer.body == b"x" * MAX_OUTPUT


@pytest.mark.parametrize("raw", [b"", b"SSH-2.0-OpenSSH\r\n", b"HTTP/1.1 2000 OK\r\n\r\n", b"HTTP/2 200\r\n\r\n"])
def test_an_answer_that_is_not_http_is_a_bad_response(raw):
    """A server speaking something else fails the check with the line it sent."""
    with pytest.raises(BadResponse):
        parse_answer(raw)


@given(st.binary(max_size=300))
def test_parsing_never_raises_anything_but_bad_response(raw):
    """Whatever bytes come back, the parse answers or says BadResponse."""
    try:
        parse_answer(raw)
    except BadResponse:
        pass
