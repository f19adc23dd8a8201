"""Signing keys: fetched, cached, refreshed and refetched within limits, discovered over real HTTP."""

from __future__ import annotations

import gc
import logging
import threading
import uuid
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Mapping
from typing import Any

import pytest
from joserfc.jwk import ECKey
from joserfc.jwk import Key
from joserfc.jwk import OKPKey
from joserfc.jwk import RSAKey

from app.auth.challenges import KeysUnavailable
from app.auth.jwks import MAX_DOCUMENT_BYTES
from app.auth.jwks import KeyFetchError
from app.auth.jwks import KeyStore
from app.auth.jwks import RemoteJWKS
from app.auth.jwks import StaticJWKS
from app.auth.jwks import fetch_json
from app.auth.jwks import import_signing_keys
from tests.support.issuer import MockIssuer

KEY_A = ECKey.generate_key("P-256", auto_kid=True)
KEY_B = ECKey.generate_key("P-256", auto_kid=True)
RSA_KEY = RSAKey.generate_key(2048, auto_kid=True)
OKP_KEY = OKPKey.generate_key("Ed25519", auto_kid=True)


def public(key: Key, **extra: Any) -> dict[str, Any]:
    return {**key.as_dict(private=False), **extra}


def random_kid() -> str:
    return uuid.uuid4().hex


class Clock:
    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeSource:
    """A KeySource that counts fetches and can fail on demand."""

    def __init__(self, *keys: Key) -> None:
        self.keys = list(keys)
        self.failure: str | None = None
        self.fetches = 0

    def publish(self, *keys: Key) -> None:
        self.keys = list(keys)

    def fetch(self) -> Mapping[str, Any]:
        self.fetches += 1
        if self.failure is not None:
            raise KeyFetchError(self.failure)
        return {"keys": [public(key) for key in self.keys]}


class BlockingSource(FakeSource):
    """A fetch that, once armed, waits until the test releases it."""

    def __init__(self, *keys: Key) -> None:
        super().__init__(*keys)
        self.armed = False
        self.entered = threading.Event()
        self.release = threading.Event()

    def fetch(self) -> Mapping[str, Any]:
        if self.armed:
            self.entered.set()
            assert self.release.wait(timeout=10)
        return super().fetch()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def source() -> FakeSource:
    return FakeSource(KEY_A)


@pytest.fixture
def events() -> list[str]:
    return []


@pytest.fixture
def store(source: FakeSource, clock: Clock, events: list[str]) -> KeyStore:
    return KeyStore(source, ttl=3600, refetch_cooldown=30, clock=clock, on_fetch=events.append)


class TestInitialLoad:
    def test_nothing_is_fetched_before_first_use(self, store: KeyStore, source: FakeSource) -> None:
        assert store.status == "missing"
        assert (source.fetches, store.fetch_count) == (0, 0)

    def test_first_find_loads_the_keys(self, store: KeyStore, source: FakeSource, events: list[str]) -> None:
        key = store.find(KEY_A.kid)
        assert key.thumbprint() == KEY_A.thumbprint()
        assert not key.is_private
        assert store.status == "fresh"
        assert (source.fetches, store.fetch_count, events) == (1, 1, ["ok"])

    def test_ensure_loaded(self, store: KeyStore, source: FakeSource) -> None:
        assert store.ensure_loaded() == "fresh"
        assert store.ensure_loaded() == "fresh"
        store.find(KEY_A.kid)
        assert source.fetches == 1

    def test_no_keys_at_all(self, store: KeyStore, source: FakeSource, clock: Clock, events: list[str]) -> None:
        source.failure = "connection refused"
        with pytest.raises(KeysUnavailable) as caught:
            store.find(KEY_A.kid)
        assert caught.value.retry_after == 30
        assert store.status == "missing"
        assert store.ensure_loaded() == "missing"
        clock.advance(29)
        with pytest.raises(KeysUnavailable):
            store.find(KEY_A.kid)
        assert (source.fetches, events) == (1, ["error"])

        source.failure = None
        clock.advance(1)
        assert store.find(KEY_A.kid).thumbprint() == KEY_A.thumbprint()
        assert (source.fetches, store.status, events) == (2, "fresh", ["error", "ok"])

    def test_retry_after_is_the_whole_cooldown(self, source: FakeSource) -> None:
        source.failure = "down"
        store = KeyStore(source, refetch_cooldown=12.7, clock=Clock())
        with pytest.raises(KeysUnavailable) as caught:
            store.find(None)
        assert caught.value.retry_after == 12

    def test_without_on_fetch(self, source: FakeSource, clock: Clock) -> None:
        store = KeyStore(source, clock=clock)
        assert store.find(KEY_A.kid).thumbprint() == KEY_A.thumbprint()


class TestTTL:
    def test_keys_are_cached_until_the_ttl(self, store: KeyStore, source: FakeSource, clock: Clock) -> None:
        store.find(KEY_A.kid)
        clock.advance(3599)
        assert store.status == "fresh"
        store.find(KEY_A.kid)
        assert store.ensure_loaded() == "fresh"
        assert source.fetches == 1

    def test_refresh_after_the_ttl(self, store: KeyStore, source: FakeSource, clock: Clock, events: list[str]) -> None:
        store.find(KEY_A.kid)
        source.publish(KEY_B)
        clock.advance(3600)
        assert store.status == "stale"
        assert store.find(KEY_B.kid).thumbprint() == KEY_B.thumbprint()
        assert (source.fetches, store.status, events) == (2, "fresh", ["ok", "ok"])
        with pytest.raises(LookupError):
            store.find(KEY_A.kid)  # withdrawn from the set, and the cooldown forbids another fetch
        assert source.fetches == 2

    def test_ensure_loaded_refreshes_after_the_ttl(self, store: KeyStore, source: FakeSource, clock: Clock) -> None:
        store.ensure_loaded()
        clock.advance(3600)
        assert store.ensure_loaded() == "fresh"
        assert source.fetches == 2

    def test_source_failure_keeps_the_cached_keys(
        self, store: KeyStore, source: FakeSource, clock: Clock, events: list[str]
    ) -> None:
        store.find(KEY_A.kid)
        source.failure = "HTTP Error 503"
        clock.advance(3600)
        assert store.find(KEY_A.kid).thumbprint() == KEY_A.thumbprint()
        assert store.status == "stale"
        for _ in range(100):
            store.find(KEY_A.kid)
        assert (source.fetches, events) == (2, ["ok", "error"])

        clock.advance(30)
        assert store.find(KEY_A.kid).thumbprint() == KEY_A.thumbprint()
        assert (source.fetches, store.status) == (3, "stale")

        source.failure = None
        clock.advance(30)
        store.find(KEY_A.kid)
        assert (source.fetches, store.status, events) == (4, "fresh", ["ok", "error", "error", "ok"])

    def test_failed_refetch_marks_the_keys_stale(self, store: KeyStore, source: FakeSource, clock: Clock) -> None:
        store.find(KEY_A.kid)
        source.failure = "timeout"
        clock.advance(30)
        with pytest.raises(LookupError):
            store.find(KEY_B.kid)
        assert store.status == "stale"
        assert store.find(KEY_A.kid).thumbprint() == KEY_A.thumbprint()

    def test_ttl_refresh_in_flight_does_not_block_a_request(self, clock: Clock) -> None:
        source = BlockingSource(KEY_A)
        store = KeyStore(source, ttl=60, refetch_cooldown=0, clock=clock)
        store.find(KEY_A.kid)
        clock.advance(60)
        source.armed = True
        refresher = threading.Thread(target=store.ensure_loaded)
        refresher.start()
        try:
            assert source.entered.wait(timeout=10)
            assert store.find(KEY_A.kid).thumbprint() == KEY_A.thumbprint()
            assert store.fetch_count == 2
        finally:
            source.release.set()
            refresher.join(timeout=10)
        assert not refresher.is_alive()
        assert (source.fetches, store.status) == (2, "fresh")

    @pytest.mark.parametrize("rotated", [False, True], ids=["first load", "unknown kid after rotation"])
    def test_a_request_waits_for_the_fetch_in_flight(self, clock: Clock, rotated: bool) -> None:
        source = BlockingSource(KEY_A)
        store = KeyStore(source, ttl=3600, refetch_cooldown=30, clock=clock)
        if rotated:
            store.find(KEY_A.kid)
            clock.advance(30)
            source.publish(KEY_A, KEY_B)
        source.armed = True
        first = threading.Thread(target=store.find, args=(KEY_B.kid if rotated else KEY_A.kid,))
        first.start()
        try:
            assert source.entered.wait(timeout=10)
            found: list[Key] = []
            second = threading.Thread(target=lambda: found.append(store.find(KEY_B.kid if rotated else KEY_A.kid)))
            second.start()
            source.release.set()
            second.join(timeout=10)
        finally:
            source.release.set()
            first.join(timeout=10)
        wanted = KEY_B if rotated else KEY_A
        assert [key.thumbprint() for key in found] == [wanted.thumbprint()]
        assert source.fetches == (2 if rotated else 1)


class TestUnknownKid:
    def test_random_kids_within_the_cooldown_cause_no_fetch(self, store: KeyStore, source: FakeSource) -> None:
        store.find(KEY_A.kid)
        for _ in range(1000):
            with pytest.raises(LookupError):
                store.find(random_kid())
        assert source.fetches == 1

    def test_random_kids_refetch_at_most_once_per_cooldown(
        self, store: KeyStore, source: FakeSource, clock: Clock
    ) -> None:
        store.find(KEY_A.kid)
        clock.advance(30)
        for _ in range(1000):
            with pytest.raises(LookupError):
                store.find(random_kid())
        assert source.fetches == 2
        clock.advance(29)
        with pytest.raises(LookupError):
            store.find(random_kid())
        assert source.fetches == 2
        clock.advance(1)
        with pytest.raises(LookupError):
            store.find(random_kid())
        assert source.fetches == 3

    def test_lookup_error_names_the_kid(self, store: KeyStore) -> None:
        with pytest.raises(LookupError) as caught:
            store.find("no-such-kid")
        assert caught.value.args == ("no-such-kid",)

    def test_rotation_is_accepted_on_the_first_request_once_the_cooldown_allows(
        self, store: KeyStore, source: FakeSource, clock: Clock
    ) -> None:
        store.find(KEY_A.kid)
        source.publish(KEY_A, KEY_B)
        clock.advance(29)
        with pytest.raises(LookupError):
            store.find(KEY_B.kid)
        assert source.fetches == 1
        clock.advance(1)
        assert store.find(KEY_B.kid).thumbprint() == KEY_B.thumbprint()
        assert store.find(KEY_A.kid).thumbprint() == KEY_A.thumbprint()
        assert (source.fetches, store.status) == (2, "fresh")

    def test_rotation_long_after_the_last_fetch(self, store: KeyStore, source: FakeSource, clock: Clock) -> None:
        store.find(KEY_A.kid)
        clock.advance(600)
        source.publish(KEY_B)
        assert store.find(KEY_B.kid).thumbprint() == KEY_B.thumbprint()
        assert source.fetches == 2


class TestTokenWithoutKid:
    def test_one_key_is_unambiguous(self, store: KeyStore) -> None:
        assert store.find(None).thumbprint() == KEY_A.thumbprint()

    def test_two_keys_are_ambiguous(self, clock: Clock) -> None:
        source = FakeSource(KEY_A, KEY_B)
        store = KeyStore(source, clock=clock)
        with pytest.raises(LookupError) as caught:
            store.find(None)
        assert caught.value.args == (None,)
        assert source.fetches == 1

    def test_a_key_without_kid(self, clock: Clock) -> None:
        store = KeyStore(StaticJWKS({"keys": [{k: v for k, v in public(KEY_A).items() if k != "kid"}]}), clock=clock)
        assert store.find(None).thumbprint() == KEY_A.thumbprint()
        with pytest.raises(LookupError):
            store.find(KEY_A.kid)


class TestImportSigningKeys:
    @pytest.mark.parametrize(
        ("jwks", "message"),
        [
            pytest.param({}, "the JWK Set has no 'keys' array", id="no-keys-member"),
            pytest.param({"keys": {"kty": "EC"}}, "the JWK Set has no 'keys' array", id="keys-not-a-list"),
            pytest.param({"keys": []}, "the JWK Set holds no usable signing key", id="empty"),
            pytest.param(
                {"keys": [{"kty": "EC", "kid": "x"}, "junk", public(KEY_A, use="enc")]},
                "the JWK Set holds no usable signing key",
                id="nothing-usable",
            ),
        ],
    )
    def test_refused(self, jwks: dict[str, Any], message: str) -> None:
        with pytest.raises(KeyFetchError, match=f"^{message}$"):
            import_signing_keys(jwks)

    def test_bad_entries_are_skipped(self, caplog: pytest.LogCaptureFixture) -> None:
        jwks = {
            "keys": [
                5,
                "junk",
                {"kty": "EC", "kid": "no-curve"},
                {"kty": "nope", "kid": "unknown-type"},
                public(KEY_B, use="enc"),
                public(KEY_A, use="sig"),
                public(RSA_KEY),
                public(OKP_KEY),
            ]
        }
        with caplog.at_level(logging.WARNING, logger="app.auth.jwks"):
            keys = import_signing_keys(jwks)
        assert {kid: key.thumbprint() for kid, key in keys.items()} == {
            KEY_A.kid: KEY_A.thumbprint(),
            RSA_KEY.kid: RSA_KEY.thumbprint(),
            OKP_KEY.kid: OKP_KEY.thumbprint(),
        }
        ignored = [r.getMessage().partition(": ")[0] for r in caplog.records]
        assert ignored == [
            "ignoring a JWK that cannot be imported (kid='no-curve')",
            "ignoring a JWK that cannot be imported (kid='unknown-type')",
        ]

    @pytest.mark.parametrize(
        "key",
        [
            pytest.param(KEY_A, id="ec"),
            pytest.param(RSA_KEY, id="rsa"),
            pytest.param(OKP_KEY, id="okp"),
        ],
    )
    def test_private_parts_are_dropped(self, key: Key) -> None:
        imported = import_signing_keys({"keys": [key.as_dict(private=True)]})[key.kid]
        assert not imported.is_private
        assert imported.as_dict() == key.as_dict(private=False)

    def test_static_jwks(self) -> None:
        jwks = {"keys": [public(KEY_A)]}
        assert StaticJWKS(jwks).fetch() is jwks


@pytest.fixture(scope="module")
def idp_server() -> Iterator[MockIssuer]:
    with MockIssuer(path="/tenant") as mock:
        yield mock


@pytest.fixture
def idp(idp_server: MockIssuer) -> Iterator[MockIssuer]:
    """An identity provider with a path in its issuer, reset around each test so request counts are its own."""
    key = idp_server.key
    idp_server.requests.clear()
    yield idp_server
    idp_server.key = key
    idp_server.published = [key]
    idp_server.down = False
    idp_server.requests.clear()
    # Collect the failed fetches' exception cycles now, so anything they leak shows up in this test.
    gc.collect()


def fetch_failure(fetch: Callable[[], object]) -> str:
    """The KeyFetchError's message, without keeping the exception (and the HTTP response it chains) alive."""
    try:
        fetch()
    except KeyFetchError as exc:
        return str(exc)
    pytest.fail("no KeyFetchError")


def not_found(url: str) -> str:
    return f"GET {url} failed: HTTP Error 404: Not Found"


class TestFetchJson:
    @pytest.mark.parametrize(
        "url",
        [
            pytest.param("http://login.example.com/keys", id="plain-http"),
            pytest.param("http://10.0.0.1/keys", id="plain-http-private-address"),
            pytest.param("ftp://127.0.0.1/keys", id="ftp-loopback"),
            pytest.param("file:///etc/passwd", id="file"),
            pytest.param("/keys", id="relative"),
            pytest.param("", id="empty"),
        ],
    )
    def test_refuses_non_https_non_loopback(self, url: str) -> None:
        with pytest.raises(KeyFetchError) as caught:
            fetch_json(url)
        assert str(caught.value) == f"refusing to fetch {url!r}: not an https URL"

    def test_loopback_http(self, idp: MockIssuer) -> None:
        assert fetch_json(idp.jwks_uri) == idp.jwks()
        assert idp.requests == ["/keys"]

    def test_document_of_exactly_the_limit(self, idp: MockIssuer, monkeypatch: pytest.MonkeyPatch) -> None:
        document = {"pad": "x" * (MAX_DOCUMENT_BYTES - len('{"pad": ""}'))}
        monkeypatch.setattr(idp, "jwks", lambda: document)
        assert fetch_json(idp.jwks_uri) == document

    def test_refuses_an_oversized_document(self, idp: MockIssuer, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(idp, "jwks", lambda: {"pad": "x" * (MAX_DOCUMENT_BYTES - len('{"pad": ""}') + 1)})
        with pytest.raises(KeyFetchError) as caught:
            fetch_json(idp.jwks_uri)
        assert str(caught.value) == f"GET {idp.jwks_uri}: document larger than 524288 bytes"

    def test_refuses_a_json_array(self, idp: MockIssuer, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(idp, "jwks", lambda: [public(KEY_A)])
        with pytest.raises(KeyFetchError) as caught:
            fetch_json(idp.jwks_uri)
        assert str(caught.value) == f"GET {idp.jwks_uri}: not a JSON object"

    def test_http_error(self, idp: MockIssuer) -> None:
        idp.down = True
        message = fetch_failure(lambda: fetch_json(idp.jwks_uri))
        assert message == f"GET {idp.jwks_uri} failed: HTTP Error 503: Service Unavailable"


class TestRemoteJWKS:
    @pytest.mark.parametrize(
        ("issuer", "urls"),
        [
            pytest.param(
                "https://login.example.com",
                [
                    "https://login.example.com/.well-known/oauth-authorization-server",
                    "https://login.example.com/.well-known/openid-configuration",
                ],
                id="origin",
            ),
            pytest.param(
                "https://login.example.com/",
                [
                    "https://login.example.com/.well-known/oauth-authorization-server",
                    "https://login.example.com/.well-known/openid-configuration",
                ],
                id="origin-slash",
            ),
            pytest.param(
                "https://login.example.com/tenant/",
                [
                    "https://login.example.com/.well-known/oauth-authorization-server/tenant",
                    "https://login.example.com/.well-known/openid-configuration/tenant",
                    "https://login.example.com/tenant/.well-known/openid-configuration",
                ],
                id="path-with-terminating-slash",
            ),
            pytest.param(
                "https://login.example.com/tenant/v2.0",
                [
                    "https://login.example.com/.well-known/oauth-authorization-server/tenant/v2.0",
                    "https://login.example.com/.well-known/openid-configuration/tenant/v2.0",
                    "https://login.example.com/tenant/v2.0/.well-known/openid-configuration",
                ],
                id="path-inserted-first",
            ),
        ],
    )
    def test_metadata_urls(self, issuer: str, urls: list[str]) -> None:
        assert RemoteJWKS(issuer).metadata_urls() == urls

    def test_discovers_the_jwks_uri_from_the_path_inserted_url(self, idp: MockIssuer) -> None:
        remote = RemoteJWKS(idp.issuer)
        assert remote.fetch() == idp.jwks()
        assert remote.jwks_uri == idp.jwks_uri
        assert idp.requests == ["/.well-known/oauth-authorization-server/tenant", "/keys"]
        remote.fetch()
        assert idp.requests == ["/.well-known/oauth-authorization-server/tenant", "/keys", "/keys"]

    def test_configured_jwks_uri_skips_discovery(self, idp: MockIssuer) -> None:
        assert RemoteJWKS(idp.issuer, idp.jwks_uri).fetch() == idp.jwks()
        assert idp.requests == ["/keys"]

    def test_metadata_for_another_issuer_is_not_used(self, idp: MockIssuer, monkeypatch: pytest.MonkeyPatch) -> None:
        metadata = {**idp.metadata(), "issuer": "https://evil.example", "jwks_uri": "https://evil.example/keys"}
        monkeypatch.setattr(idp, "metadata", lambda: metadata)
        remote = RemoteJWKS(idp.issuer)
        with pytest.raises(KeyFetchError) as caught:
            remote.fetch()
        urls = remote.metadata_urls()
        assert str(caught.value) == (
            "no usable authorization server metadata: "
            f"{urls[0]}: issuer 'https://evil.example' is not {idp.issuer!r}; "
            f"{not_found(urls[1])}; {not_found(urls[2])}"
        )
        assert remote.jwks_uri is None
        assert "/keys" not in idp.requests

    def test_metadata_without_jwks_uri(self, idp: MockIssuer, monkeypatch: pytest.MonkeyPatch) -> None:
        metadata = {k: v for k, v in idp.metadata().items() if k != "jwks_uri"}
        monkeypatch.setattr(idp, "metadata", lambda: metadata)
        remote = RemoteJWKS(idp.issuer)
        with pytest.raises(KeyFetchError) as caught:
            remote.discover()
        urls = remote.metadata_urls()
        assert str(caught.value) == (
            f"no usable authorization server metadata: {urls[0]}: no jwks_uri; "
            f"{not_found(urls[1])}; {not_found(urls[2])}"
        )

    def test_metadata_naming_a_plain_http_jwks_uri(self, idp: MockIssuer, monkeypatch: pytest.MonkeyPatch) -> None:
        metadata = {**idp.metadata(), "jwks_uri": "http://keys.example.com/jwks"}
        monkeypatch.setattr(idp, "metadata", lambda: metadata)
        with pytest.raises(KeyFetchError) as caught:
            RemoteJWKS(idp.issuer).fetch()
        assert str(caught.value) == "refusing to fetch 'http://keys.example.com/jwks': not an https URL"

    def test_issuer_down(self, idp: MockIssuer) -> None:
        idp.down = True
        remote = RemoteJWKS(idp.issuer)
        with pytest.raises(KeyFetchError) as caught:
            remote.fetch()
        failures = [f"GET {url} failed: HTTP Error 503: Service Unavailable" for url in remote.metadata_urls()]
        assert str(caught.value) == "no usable authorization server metadata: " + "; ".join(failures)

    def test_key_store_over_http_rotation_and_outage(self, idp: MockIssuer, clock: Clock) -> None:
        store = KeyStore(RemoteJWKS(idp.issuer), ttl=3600, refetch_cooldown=30, clock=clock)
        first = idp.key
        assert store.find(first.kid).thumbprint() == first.thumbprint()
        second = idp.rotate()
        with pytest.raises(LookupError):
            store.find(second.kid)
        clock.advance(30)
        assert store.find(second.kid).thumbprint() == second.thumbprint()
        assert idp.key_fetches() == 2

        idp.down = True
        clock.advance(3600)
        assert store.find(second.kid).thumbprint() == second.thumbprint()
        assert store.find(first.kid).thumbprint() == first.thumbprint()
        assert (store.status, store.fetch_count) == ("stale", 3)
        assert idp.requests.count("/.well-known/oauth-authorization-server/tenant") == 1
