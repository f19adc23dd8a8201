"""Redirect URIs: what a client may register, and when a requested URI matches a registered one.

https://www.rfc-editor.org/rfc/rfc8252#section-7.3
https://www.rfc-editor.org/rfc/rfc6749#section-3.1.2

Matching is exact, byte for byte, except for loopback redirect URIs: a native
app (Claude Code, the SDK's client, mcp-remote) listens on whatever port is
free when the user signs in, so "the authorization server MUST allow any port
to be specified at the time of the request for loopback IP redirect URIs"
(RFC 8252 section 7.3). Scheme, host, path and query must still match.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from app.urls import is_loopback_host

# Schemes a redirect must never use: they run code or read local data in the browser.
FORBIDDEN_SCHEMES = frozenset({"javascript", "data", "file", "vbscript", "about", "blob", "filesystem"})
_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*$")


def redirect_uri_problem(uri: object) -> str | None:
    """Why ``uri`` cannot be registered as a redirect URI, or None when it can.

    https anywhere, http only on a loopback host (RFC 8252 section 7.3), or a
    private-use scheme of a native app (section 7.1); never a fragment
    (RFC 6749 section 3.1.2).
    """
    if not isinstance(uri, str) or not uri:
        return "redirect URIs must be non-empty strings"
    try:
        parts = urlsplit(uri)
        parts.port  # noqa: B018  (raises on a malformed port)
    except ValueError:
        return f"{uri} is not a valid URI"
    scheme = parts.scheme.lower()
    if not _SCHEME.match(scheme):
        return f"{uri} is not an absolute URI"
    if parts.fragment or "#" in uri:
        return f"{uri} must not contain a fragment"
    if scheme in FORBIDDEN_SCHEMES:
        return f"the {scheme} scheme cannot be a redirect URI"
    if scheme in ("http", "https") and not parts.hostname:
        return f"{uri} has no host"
    if scheme == "http" and not is_loopback_host(parts.hostname):
        return f"{uri} must use https (plain http only for loopback hosts)"
    if parts.username is not None or parts.password is not None:
        return f"{uri} must not contain credentials"
    return None


def redirect_uri_matches(registered: str, requested: str) -> bool:
    """Whether ``requested`` is the registered URI, any port allowed on loopback http URIs."""
    if registered == requested:
        return True
    try:
        want, got = urlsplit(registered), urlsplit(requested)
        got.port  # noqa: B018  (a malformed port never matches)
    except ValueError:
        return False
    if want.scheme != "http" or got.scheme != "http" or not is_loopback_host(want.hostname):
        return False
    if got.username is not None or got.password is not None or got.fragment or "#" in requested:
        return False
    return (want.hostname, want.path, want.query) == (got.hostname, got.path, got.query)
