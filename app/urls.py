"""URL helpers shared by the settings and the parts: loopback hosts, origins, the https rule.

Plain http is accepted only for loopback hosts (local development and tests);
everything a client or an authorization server is told must be https.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def is_loopback_host(host: str | None) -> bool:
    if host is None:
        return False
    host = host.strip("[]").lower()
    if host in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def origin(url: str) -> str:
    """``scheme://host[:port]`` of an absolute URL."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def url_problem(url: str) -> str | None:
    """Why ``url`` may not be configured (https, or http to a loopback host; no fragment), or None when it may."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018  (raises on a malformed port)
    except ValueError as exc:
        return f"not a valid URL: {url!r} ({exc})"
    if parts.scheme not in ("https", "http") or not host:
        return f"must be an absolute https URL, not {url!r}"
    if parts.scheme == "http" and not is_loopback_host(host):
        return f"must use https (plain http is only allowed for loopback hosts): {url!r}"
    if parts.fragment:
        return f"must not carry a fragment: {url!r}"
    return None
