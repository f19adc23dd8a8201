"""OAuth Client ID Metadata Documents: a client_id that is a URL, resolved by fetching it.

https://datatracker.ietf.org/doc/draft-ietf-oauth-client-id-metadata-document/
https://modelcontextprotocol.io/specification/2026-07-28/basic/authorization

The MCP authorization spec prefers this to dynamic registration: the client
publishes its metadata at an https URL and uses that URL as its client_id, so
nothing has to be registered ahead of time. Here the document is fetched once,
checked (its ``client_id`` is the URL, it lists redirect URIs, it claims no
shared secret), and cached in the database for every worker. In development
mode a loopback http URL is accepted too, so a local client can serve its own
document. The fetch (:mod:`.public_fetch`) connects only to public addresses
for an https URL (only to loopback ones for a loopback http URL), checked after
DNS resolution and pinned for the connection; it follows no redirect, uses no
proxy, reads at most 5 KiB (the draft's suggested limit) and gives up after 5
seconds in all, however slowly the other side answers. A document that could
not be used is remembered as such for half a minute: asking again and again
makes no new fetches.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from authlib.oauth2.rfc6749 import InvalidClientError

from app.dev_issuer.errors import safe_description
from app.dev_issuer.models import Client
from app.dev_issuer.public_fetch import FetchRefused
from app.dev_issuer.public_fetch import PublicFetcher
from app.dev_issuer.redirects import redirect_uri_problem
from app.dev_issuer.storage import Storage
from app.urls import is_loopback_host

logger = logging.getLogger(__name__)

MAX_DOCUMENT_BYTES = 5 * 1024
FETCH_TIMEOUT = 5.0
CACHE_SECONDS = 3600
FAILURE_CACHE_SECONDS = 30
FAILURE_CACHE_SIZE = 1024
ALLOWED_GRANT_TYPES = frozenset({"authorization_code", "refresh_token"})
# The draft: a document MUST NOT use an authentication method based on a shared secret.
SECRET_PROPERTIES = ("client_secret", "client_secret_expires_at")


def is_metadata_document_url(client_id: str) -> bool:
    """Whether the client_id names a metadata document (it is an http(s) URL) rather than a registration."""
    return client_id.startswith(("https://", "http://"))


def url_problem(url: str) -> str | None:
    """What makes ``url`` unusable as a client_id URL (draft section 3), or None."""
    if any(not "\x21" <= character <= "\x7e" for character in url):
        return "a client_id URL must be ASCII without spaces or control characters"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises on a malformed port)
    except ValueError:
        return "the client_id is not a valid URL"
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        return "a client_id URL must use https (plain http only on loopback in development mode)"
    if parts.scheme not in ("https", "http") or not parts.hostname:
        return "a client_id URL must be an absolute https URL"
    if parts.path in ("", "/"):
        return "a client_id URL must have a path"
    if any(segment in (".", "..") for segment in parts.path.split("/")):
        return "a client_id URL must not contain dot segments"
    if parts.fragment or "#" in url:
        return "a client_id URL must not contain a fragment"
    if parts.username is not None or parts.password is not None:
        return "a client_id URL must not contain credentials"
    return None


class ClientMetadataDocuments:
    """Resolves URL client_ids to :class:`Client` records, through a cache in the database."""

    def __init__(
        self,
        storage: Storage,
        *,
        cache_seconds: int = CACHE_SECONDS,
        timeout: float = FETCH_TIMEOUT,
        fetcher: PublicFetcher | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.storage = storage
        self.cache_seconds = cache_seconds
        self.fetcher = fetcher or PublicFetcher(timeout=timeout, max_bytes=MAX_DOCUMENT_BYTES)
        self._clock = clock
        # url -> (the refusal's description, when to forget it): per process, bounded.
        self._failures: dict[str, tuple[str, float]] = {}

    def client(self, url: str) -> Client:
        """The client the document at ``url`` describes; raises ``invalid_client`` when it cannot be used."""
        problem = url_problem(url)
        if problem is not None:
            raise InvalidClientError(description=safe_description(problem))
        now = int(time.time())
        cached = self.storage.metadata_document(url)
        if cached is not None and cached[1] + self.cache_seconds > now:
            document = cached[0]
        else:
            failed = self._failures.get(url)
            if failed is not None and failed[1] > self._clock():
                raise InvalidClientError(description=failed[0])
            try:
                document = self._validated(url, self._fetch(url))
            except InvalidClientError as error:
                self._remember_failure(url, str(error.description))
                raise
            self._failures.pop(url, None)
            self.storage.save_metadata_document(url, document, now)
            logger.info("fetched the client metadata document %s (%r)", url, document.get("client_name"))
        return Client(client_id=url, metadata=document, issued_at=now, from_metadata_document=True)

    def _remember_failure(self, url: str, description: str) -> None:
        if len(self._failures) >= FAILURE_CACHE_SIZE and url not in self._failures:
            self._failures.pop(next(iter(self._failures)), None)
        self._failures[url] = (description, self._clock() + FAILURE_CACHE_SECONDS)

    def _fetch(self, url: str) -> Any:
        try:
            fetched = self.fetcher.get(url)
        except FetchRefused as refused:
            raise self._refusal(url, str(refused)) from None
        if fetched.status != 200:
            # Redirects (3xx) included: a document is served where its URL says, or not at all.
            raise self._refusal(url, f"fetching it answered HTTP {fetched.status}")
        body, content_type = fetched.body, fetched.content_type
        if len(body) > MAX_DOCUMENT_BYTES:
            raise self._refusal(url, f"it is larger than {MAX_DOCUMENT_BYTES} bytes")
        if content_type != "application/json" and not content_type.endswith("+json"):
            raise self._refusal(url, f"it is {content_type}, not application/json")
        try:
            return json.loads(body)
        except ValueError:
            raise self._refusal(url, "it is not valid JSON") from None

    def _validated(self, url: str, document: Any) -> Mapping[str, Any]:
        if not isinstance(document, dict):
            raise self._refusal(url, "it is not a JSON object")
        if document.get("client_id") != url:
            raise self._refusal(url, "its client_id is not the URL it was fetched from")
        redirect_uris = document.get("redirect_uris")
        if not isinstance(redirect_uris, list) or not redirect_uris:
            raise self._refusal(url, "it lists no redirect_uris")
        for uri in redirect_uris:
            problem = redirect_uri_problem(uri)
            if problem is not None:
                raise self._refusal(url, problem)
        if any(name in document for name in SECRET_PROPERTIES):
            raise self._refusal(url, "it must not carry a client secret")
        method = document.get("token_endpoint_auth_method", "none")
        if method != "none":
            raise self._refusal(url, f"token_endpoint_auth_method {method} is not supported (only none)")
        grant_types = document.get("grant_types", ["authorization_code"])
        if not isinstance(grant_types, list) or not set(grant_types) <= ALLOWED_GRANT_TYPES:
            raise self._refusal(url, "grant_types may only be authorization_code and refresh_token")
        if document.get("response_types", ["code"]) != ["code"]:
            raise self._refusal(url, "response_types may only be code")
        name = document.get("client_name")
        if name is not None and not isinstance(name, str):
            raise self._refusal(url, "client_name must be a string")
        return {**document, "token_endpoint_auth_method": "none", "grant_types": grant_types}

    @staticmethod
    def _refusal(url: str, problem: str) -> InvalidClientError:
        logger.info("refused the client metadata document %s: %s", url, problem)
        return InvalidClientError(description=safe_description(f"The client metadata document at {url}: {problem}"))
