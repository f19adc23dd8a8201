"""URL helpers: which hosts are loopback, a URL's origin, and why a URL may not be configured."""

from __future__ import annotations

import pytest

from app.urls import is_loopback_host
from app.urls import origin
from app.urls import url_problem


class TestIsLoopbackHost:
    @pytest.mark.parametrize(
        ("host", "expected"),
        [
            pytest.param("127.0.0.1", True, id="ipv4"),
            pytest.param("127.0.0.53", True, id="ipv4-range"),
            pytest.param("localhost", True, id="localhost"),
            pytest.param("LocalHost", True, id="localhost-mixed-case"),
            pytest.param("::1", True, id="ipv6"),
            pytest.param("[::1]", True, id="ipv6-bracketed"),
            pytest.param(None, False, id="none"),
            pytest.param("", False, id="empty"),
            pytest.param("example.com", False, id="name"),
            pytest.param("localhost.example.com", False, id="localhost-prefix"),
            pytest.param("10.0.0.1", False, id="private-ipv4"),
            pytest.param("::2", False, id="other-ipv6"),
            pytest.param("0.0.0.0", False, id="unspecified"),  # noqa: S104 (a host name under test)
        ],
    )
    def test_is_loopback_host(self, host: str | None, expected: bool) -> None:
        assert is_loopback_host(host) is expected


class TestOrigin:
    @pytest.mark.parametrize(
        ("url", "expected"),
        [
            pytest.param("https://mcp.example.com/mcp?x=1", "https://mcp.example.com", id="path-and-query-dropped"),
            pytest.param("https://mcp.example.com:8443/a/b", "https://mcp.example.com:8443", id="port-kept"),
            pytest.param("http://[::1]:5000/mcp", "http://[::1]:5000", id="ipv6"),
        ],
    )
    def test_origin(self, url: str, expected: str) -> None:
        assert origin(url) == expected


class TestUrlProblem:
    @pytest.mark.parametrize(
        "url",
        [
            pytest.param("https://login.example.com/tenant", id="https"),
            pytest.param("http://127.0.0.1:5000/dev-issuer", id="http-loopback"),
            pytest.param("http://[::1]/keys", id="http-ipv6-loopback"),
        ],
    )
    def test_accepted(self, url: str) -> None:
        assert url_problem(url) is None

    @pytest.mark.parametrize(
        ("url", "problem"),
        [
            pytest.param(
                "https://login.example.com:99999/",
                "not a valid URL: 'https://login.example.com:99999/' (Port out of range 0-65535)",
                id="bad-port",
            ),
            pytest.param("login.example.com", "must be an absolute https URL, not 'login.example.com'", id="relative"),
            pytest.param(
                "ftp://login.example.com", "must be an absolute https URL, not 'ftp://login.example.com'", id="ftp"
            ),
            pytest.param("https:///tenant", "must be an absolute https URL, not 'https:///tenant'", id="no-host"),
            pytest.param(
                "http://login.example.com",
                "must use https (plain http is only allowed for loopback hosts): 'http://login.example.com'",
                id="plain-http",
            ),
            pytest.param(
                "https://login.example.com/#x",
                "must not carry a fragment: 'https://login.example.com/#x'",
                id="fragment",
            ),
        ],
    )
    def test_refused(self, url: str, problem: str) -> None:
        assert url_problem(url) == problem
