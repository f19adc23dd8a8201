"""The authorization server's metadata (RFC 8414, OpenID Connect Discovery) and signing keys (RFC 7517 JWK Set).

https://www.rfc-editor.org/rfc/rfc7517#section-5
https://www.rfc-editor.org/rfc/rfc8414#section-3 (discovering ``jwks_uri``)
https://openid.net/specs/openid-connect-discovery-1_0.html#ProviderConfig

The one place that fetches from an authorization server: :func:`metadata_urls`
lists where its metadata may be, :func:`metadata_attempts` fetches them in
order and checks each issuer (RFC 8414 section 3.3), :func:`discover_metadata`
returns the first usable document. The verifier's key discovery, the metadata
proxy and the doctor all read it so.

The keys are fetched and imported once, refreshed after a TTL, and refetched
when a token names an unknown ``kid`` -- but never more often than once per
cooldown, so a stream of tokens with random ``kid`` values cannot turn into a
stream of fetches. When the keys endpoint is down the cached keys stay in use;
only a worker that never loaded any keys refuses to judge tokens (503).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from typing import Literal
from typing import Protocol
from urllib.parse import urlsplit

from authlib.oauth2.rfc8414 import get_well_known_url
from joserfc.errors import JoseError
from joserfc.jwk import JWKRegistry
from joserfc.jwk import Key

from app.auth.challenges import KeysUnavailable
from app.auth.outbound import close_quietly
from app.auth.outbound import open_url
from app.urls import is_loopback_host

logger = logging.getLogger(__name__)

MAX_DOCUMENT_BYTES = 512 * 1024
FETCH_TIMEOUT = 5.0

KeyStatus = Literal["fresh", "stale", "missing"]


class KeyFetchError(Exception):
    """The keys (or the metadata that names them) could not be fetched."""


class MetadataNotFound(KeyFetchError):
    """No well-known URL gave usable metadata; ``problems`` says what each one gave."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("no usable authorization server metadata: " + "; ".join(problems))
        self.problems = problems


class KeySource(Protocol):
    """Where a JWK Set comes from."""

    def fetch(self) -> Mapping[str, Any]: ...


def fetch_json(url: str) -> dict[str, Any]:
    """GET a small JSON object, with a timeout and a size limit, over https (http only on loopback).

    A redirect is followed only within the URL's origin: the document that names
    an issuer's keys must come from where its URL says.
    """
    parts = urlsplit(url)
    if parts.scheme != "https" and not (parts.scheme == "http" and is_loopback_host(parts.hostname)):
        raise KeyFetchError(f"refusing to fetch {url!r}: not an https URL")
    request = urllib.request.Request(url, headers={"Accept": "application/json"})  # noqa: S310 (scheme checked)
    try:
        # Redirects are followed only within the URL's origin (app.auth.outbound).
        data = open_url(request, FETCH_TIMEOUT, MAX_DOCUMENT_BYTES + 1)
    except (OSError, urllib.error.URLError, ValueError) as exc:
        close_quietly(exc)
        raise KeyFetchError(f"GET {url} failed: {exc}") from None
    if len(data) > MAX_DOCUMENT_BYTES:
        raise KeyFetchError(f"GET {url}: document larger than {MAX_DOCUMENT_BYTES} bytes")
    try:
        document = json.loads(data)
    except ValueError:
        raise KeyFetchError(f"GET {url}: not JSON") from None
    if not isinstance(document, dict):
        raise KeyFetchError(f"GET {url}: not a JSON object")
    return document


def metadata_urls(issuer: str) -> list[str]:
    """Where an issuer's metadata may be: RFC 8414 section 3.1 (path-inserted) first, then OpenID Connect Discovery."""
    # RFC 8414 section 3.1: a terminating "/" is removed before inserting the well-known path.
    trimmed = issuer.rstrip("/")
    urls = [
        get_well_known_url(trimmed, external=True),
        get_well_known_url(trimmed, external=True, suffix="openid-configuration"),
        trimmed + "/.well-known/openid-configuration",
    ]
    return list(dict.fromkeys(urls))


@dataclass(frozen=True)
class MetadataAttempt:
    """One well-known URL tried: the document it gave (None: none), and why it cannot be used (None: it can)."""

    url: str
    document: dict[str, Any] | None
    problem: str | None


def metadata_attempts(issuer: str) -> Iterator[MetadataAttempt]:
    """Each of :func:`metadata_urls` fetched in turn, lazily: stop at the first usable one."""
    for url in metadata_urls(issuer):
        try:
            document = fetch_json(url)
        except KeyFetchError as exc:
            yield MetadataAttempt(url, None, str(exc))
            continue
        # RFC 8414 section 3.3: the issuer in the document MUST be identical to
        # the issuer the URL was built from; otherwise the data MUST NOT be used.
        if document.get("issuer") != issuer:
            yield MetadataAttempt(url, document, f"{url}: issuer {document.get('issuer')!r} is not {issuer!r}")
            continue
        yield MetadataAttempt(url, document, None)


def discover_metadata(issuer: str, *, require: str | None = None) -> dict[str, Any]:
    """The first usable metadata document; ``require`` names a member it must have as a non-empty string.

    Raises :class:`MetadataNotFound` listing what every URL gave.
    """
    problems = []
    for attempt in metadata_attempts(issuer):
        if attempt.problem is not None or attempt.document is None:
            problems.append(attempt.problem or f"{attempt.url}: nothing")
            continue
        value = attempt.document.get(require) if require is not None else None
        if require is not None and (not isinstance(value, str) or not value):
            problems.append(f"{attempt.url}: no {require}")
            continue
        return attempt.document
    raise MetadataNotFound(problems)


class RemoteJWKS:
    """A JWK Set at ``jwks_uri``, discovered from the issuer's metadata when not configured."""

    def __init__(self, issuer: str, jwks_uri: str | None = None) -> None:
        self.issuer = issuer
        self.jwks_uri = jwks_uri

    def metadata_urls(self) -> list[str]:
        return metadata_urls(self.issuer)

    def discover(self) -> str:
        jwks_uri: str = discover_metadata(self.issuer, require="jwks_uri")["jwks_uri"]
        return jwks_uri

    def fetch(self) -> Mapping[str, Any]:
        if self.jwks_uri is None:
            self.jwks_uri = self.discover()
        return fetch_json(self.jwks_uri)


class StaticJWKS:
    """A JWK Set held in memory (the development issuer's own keys)."""

    def __init__(self, jwks: Mapping[str, Any]) -> None:
        self._jwks = jwks

    def fetch(self) -> Mapping[str, Any]:
        return self._jwks


def import_signing_keys(jwks: Mapping[str, Any]) -> dict[str | None, Key]:
    """Import every usable signing key; one bad entry does not spoil the set."""
    entries = jwks.get("keys")
    if not isinstance(entries, list):
        raise KeyFetchError("the JWK Set has no 'keys' array")
    keys: dict[str | None, Key] = {}
    for entry in entries:
        # Encryption keys and symmetric keys have no place in a public signing key set.
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig" or entry.get("kty") == "oct":
            continue
        try:
            key = JWKRegistry.import_key(entry)
        except (JoseError, ValueError, TypeError) as exc:
            logger.warning("ignoring a JWK that cannot be imported (kid=%r): %s", entry.get("kid"), exc)
            continue
        if key.is_private:
            # A private key in a public JWK Set is a misconfiguration; never keep it.
            key = JWKRegistry.import_key(key.as_dict(private=False))
        keys[entry.get("kid") if isinstance(entry.get("kid"), str) else None] = key
    if not keys:
        raise KeyFetchError("the JWK Set holds no usable signing key")
    return keys


class KeyStore:
    """The per-worker cache of signing keys."""

    def __init__(
        self,
        source: KeySource,
        *,
        ttl: float = 3600,
        refetch_cooldown: float = 30,
        clock: Callable[[], float] = time.monotonic,
        on_fetch: Callable[[str], None] | None = None,
        before_refetch: Callable[[], None] | None = None,
    ) -> None:
        """``before_refetch`` runs before a fetch caused by a token's unknown ``kid`` (a request's doing,
        unlike the first load and TTL refreshes) and may refuse it by raising (the failed-credentials limit)."""
        self._source = source
        self._ttl = ttl
        self._cooldown = refetch_cooldown
        self._clock = clock
        self._on_fetch = on_fetch
        self._before_refetch = before_refetch
        self._keys: dict[str | None, Key] = {}
        #: Changes whenever the set of keys changes, so that caches of what they verified can notice.
        self.generation = 0
        self._loaded_at: float | None = None
        self._last_attempt: float | None = None
        self._last_ok = False
        self._lock = threading.Lock()
        self.fetch_count = 0

    @property
    def status(self) -> KeyStatus:
        if not self._keys:
            return "missing"
        fresh = self._last_ok and self._loaded_at is not None and self._clock() - self._loaded_at < self._ttl
        return "fresh" if fresh else "stale"

    def ensure_loaded(self) -> KeyStatus:
        """Load the keys if none are loaded (or the TTL ran out), within the cooldown."""
        if not self._keys or self._expired():
            self._refresh("initial load" if not self._keys else "ttl")
        return self.status

    def find(self, kid: str | None) -> Key:
        """The key for ``kid``; raises :class:`LookupError` for an unknown one.

        Raises :class:`KeysUnavailable` when no keys at all could be loaded.
        """
        if not self._keys or self._expired():
            self._refresh("initial load" if not self._keys else "ttl")
        if not self._keys:
            raise KeysUnavailable(retry_after=int(self._cooldown))
        key = self._lookup(kid)
        if key is None:
            self._refresh("unknown kid")
            key = self._lookup(kid)
        if key is None:
            raise LookupError(kid)
        return key

    def current(self, kid: str | None) -> Key | None:
        """The key serving ``kid`` now, without fetching; None once it left the set."""
        return self._lookup(kid)

    def check_ttl(self) -> None:
        """Refresh the keys if their TTL ran out (for callers that reuse earlier verdicts instead of calling find)."""
        if self._loaded_at is not None and self._clock() - self._loaded_at >= self._ttl:
            self._refresh("ttl")

    def _lookup(self, kid: str | None) -> Key | None:
        if kid is None:
            # A token without kid is only unambiguous when the set has one key.
            return next(iter(self._keys.values())) if len(self._keys) == 1 else None
        return self._keys.get(kid)

    def _expired(self) -> bool:
        return self._loaded_at is not None and self._clock() - self._loaded_at >= self._ttl

    def _within_cooldown(self) -> bool:
        return self._last_attempt is not None and self._clock() - self._last_attempt < self._cooldown

    def _refresh(self, reason: str) -> bool:
        """Fetch the keys unless a fetch happened within the cooldown; True if new keys came.

        A TTL refresh never makes a request wait: while another thread fetches,
        the cached keys keep serving. A first load or an unknown ``kid`` waits
        for a fetch in flight, whose keys it can then use.
        """
        if reason == "ttl":
            if self._within_cooldown() or not self._lock.acquire(blocking=False):
                return False
        else:
            if self._within_cooldown() and not self._lock.locked():
                return False
            self._lock.acquire()  # wait for a fetch in flight: its keys may be the ones we need
        try:
            if self._within_cooldown():
                return False
            if reason == "unknown kid" and self._before_refetch is not None:
                self._before_refetch()  # may raise: the caller is not let to cause a fetch
            now = self._clock()
            self._last_attempt = now
            self.fetch_count += 1
            try:
                keys = import_signing_keys(self._source.fetch())
            except KeyFetchError as exc:
                self._last_ok = False
                if self._on_fetch:
                    self._on_fetch("error")
                logger.warning(
                    "signing keys could not be fetched (%s): %s; %s",
                    reason,
                    exc,
                    "keeping the cached keys" if self._keys else "no keys are loaded",
                )
                return False
            # A key that stayed (same kid, same material) keeps its object: what it verified stays verified.
            for kid, key in keys.items():
                old = self._keys.get(kid)
                if old is not None and old.as_dict(private=False) == key.as_dict(private=False):
                    keys[kid] = old
            if keys != self._keys:
                self.generation += 1
            self._keys = keys
            self._loaded_at = now
            self._last_ok = True
            if self._on_fetch:
                self._on_fetch("ok")
            logger.info("loaded %d signing key(s) (%s): kids=%s", len(keys), reason, sorted(map(str, keys)))
            return True
        finally:
            self._lock.release()
