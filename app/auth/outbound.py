"""Outbound HTTP to the authorization server: metadata, signing keys, introspection.

https://www.rfc-editor.org/rfc/rfc8414#section-3.3
https://www.rfc-editor.org/rfc/rfc9700#section-4.11

Every such request is sent to a URL that came from settings or from the
issuer's own metadata, and its answer decides which tokens this server accepts.
A redirect must not take it anywhere else: urllib follows any redirect by
default, https to plain http included, and on a POST it would carry the
``Authorization`` header (the introspection client's secret) to the new host.
So a GET follows redirects only within the origin it was sent to (same scheme,
host and port), and a POST follows none. The wait for the answer gives the
request's run slot back (:mod:`app.serving.run_slot`): other requests of the
worker run meanwhile.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from http.client import HTTPMessage
from typing import IO
from typing import Any
from urllib.parse import urljoin
from urllib.parse import urlsplit

from app.serving import run_slot


def origin(url: str) -> tuple[str, str, int | None]:
    """Scheme, host and port of ``url`` (the default port spelled out)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or {"http": 80, "https": 443}.get(scheme)


class RedirectRefused(urllib.error.URLError):
    """A redirect to another origin (or any redirect of a POST): never followed."""


class SameOriginRedirects(urllib.request.HTTPRedirectHandler):
    """Follow a redirect only to the origin the request was sent to, and only for GET."""

    def redirect_request(
        self, req: urllib.request.Request, fp: IO[bytes], code: int, msg: str, headers: HTTPMessage, newurl: str
    ) -> urllib.request.Request | None:
        target = urljoin(req.full_url, newurl)
        if req.get_method() != "GET":
            fp.close()
            raise RedirectRefused(f"refused a redirect of a {req.get_method()} (HTTP {code})")
        if origin(target) != origin(req.full_url):
            fp.close()
            raise RedirectRefused(f"refused a redirect to another origin, {target[:200]!r} (HTTP {code})")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_OPENER = urllib.request.build_opener(SameOriginRedirects())


def open_url(request: urllib.request.Request, timeout: float, limit: int) -> bytes:
    """The first ``limit`` bytes of the answer to ``request`` (HTTPError for a status >= 400)."""
    with run_slot.released(), _OPENER.open(request, timeout=timeout) as response:
        data: bytes = response.read(limit)
    return data


def close_quietly(error: Any) -> None:
    if isinstance(error, urllib.error.HTTPError):
        error.close()
