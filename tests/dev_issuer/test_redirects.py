"""Which redirect URIs a client may register, and which requested URIs match them."""

from __future__ import annotations

import pytest

from app.dev_issuer.redirects import redirect_uri_matches
from app.dev_issuer.redirects import redirect_uri_problem


@pytest.mark.parametrize(
    ("uri", "problem"),
    [
        pytest.param("https://app.example.com/cb", None, id="https"),
        pytest.param("http://127.0.0.1:8765/callback", None, id="loopback-ipv4"),
        pytest.param("http://localhost/callback", None, id="localhost"),
        pytest.param("http://[::1]:9000/cb", None, id="loopback-ipv6"),
        pytest.param("cursor://anysphere.cursor-retrieval/oauth/callback", None, id="private-use-scheme"),
        pytest.param("com.example.app:/oauth2redirect", None, id="reverse-domain-scheme"),
        pytest.param(
            "http://app.example.com/cb",
            "http://app.example.com/cb must use https (plain http only for loopback hosts)",
            id="http-remote",
        ),
        pytest.param(
            "https://app.example.com/cb#x", "https://app.example.com/cb#x must not contain a fragment", id="fragment"
        ),
        pytest.param("javascript:alert(1)", "the javascript scheme cannot be a redirect URI", id="javascript"),
        pytest.param("data:text/html,hi", "the data scheme cannot be a redirect URI", id="data"),
        pytest.param("/callback", "/callback is not an absolute URI", id="relative"),
        pytest.param("https:///cb", "https:///cb has no host", id="no-host"),
        pytest.param(
            "https://u:p@app.example.com/cb",
            "https://u:p@app.example.com/cb must not contain credentials",
            id="userinfo",
        ),
        pytest.param("http://127.0.0.1:99999/cb", "http://127.0.0.1:99999/cb is not a valid URI", id="bad-port"),
        pytest.param("", "redirect URIs must be non-empty strings", id="empty"),
        pytest.param(42, "redirect URIs must be non-empty strings", id="not-a-string"),
    ],
)
def test_what_may_be_registered(uri: object, problem: str | None) -> None:
    assert redirect_uri_problem(uri) == problem


@pytest.mark.parametrize(
    ("registered", "requested", "matches"),
    [
        pytest.param("https://app.example.com/cb", "https://app.example.com/cb", True, id="exact"),
        pytest.param("https://app.example.com/cb", "https://app.example.com:8443/cb", False, id="https-port-differs"),
        pytest.param("https://app.example.com/cb", "https://app.example.com/cb/", False, id="trailing-slash"),
        pytest.param("https://app.example.com/cb", "https://APP.example.com/cb", False, id="case"),
        pytest.param("http://127.0.0.1:8765/callback", "http://127.0.0.1:51234/callback", True, id="loopback-any-port"),
        pytest.param("http://127.0.0.1/callback", "http://127.0.0.1:51234/callback", True, id="loopback-port-added"),
        pytest.param("http://localhost:3000/cb", "http://localhost:4000/cb", True, id="localhost-any-port"),
        pytest.param("http://[::1]:3000/cb", "http://[::1]:4000/cb", True, id="ipv6-any-port"),
        pytest.param("http://127.0.0.1:8765/callback", "http://127.0.0.1:8765/other", False, id="loopback-path"),
        pytest.param("http://127.0.0.1:8765/cb?a=1", "http://127.0.0.1:9/cb?a=2", False, id="loopback-query"),
        pytest.param("http://127.0.0.1:8765/cb", "http://localhost:8765/cb", False, id="loopback-other-host"),
        pytest.param("http://127.0.0.1:8765/cb", "https://127.0.0.1:8765/cb", False, id="loopback-scheme"),
        pytest.param("http://127.0.0.1:8765/cb", "http://127.0.0.1:9/cb#frag", False, id="loopback-fragment"),
        pytest.param("http://127.0.0.1:8765/cb", "http://evil@127.0.0.1:9/cb", False, id="loopback-userinfo"),
        pytest.param("http://127.0.0.1:8765/cb", "http://127.0.0.1:bad/cb", False, id="loopback-bad-port"),
    ],
)
def test_matching(registered: str, requested: str, matches: bool) -> None:
    assert redirect_uri_matches(registered, requested) is matches
