"""Rate limits: per verified caller, and per address for refused credentials."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from flask import Flask

from app import create_app
from app import stop_worker
from app.settings import Settings
from app.settings import SettingsError
from tests.conftest import RESOURCE
from tests.support.issuer import MockIssuer
from tests.support.jsonrpc import request_body
from tests.support.jsonrpc import request_headers
from tests.support.load import wait_for
from tests.support.servers import start_app

LIST = request_body("tools/list")


def limited_app(issuer: MockIssuer, tmp_path: Path, **env: str) -> Flask:
    settings = Settings.from_mapping(
        {"MCP_RESOURCE_URL": RESOURCE, "MCP_ISSUER": issuer.issuer, "MCP_INSTANCE_PATH": str(tmp_path), **env}
    )
    return create_app(settings)


def post(app: Flask, token: str | None, address: str = "10.0.0.1"):  # type: ignore[no-untyped-def]
    response = app.test_client().post(
        "/mcp", headers=request_headers("tools/list", token=token), json=LIST, environ_base={"REMOTE_ADDR": address}
    )
    response.close()
    return response


def test_each_caller_has_their_own_limit(issuer: MockIssuer, tmp_path: Path) -> None:
    app = limited_app(issuer, tmp_path, MCP_RATE_LIMIT="3/minute")
    alice, bob = issuer.mint(RESOURCE, sub="alice"), issuer.mint(RESOURCE, sub="bob")
    assert [post(app, alice).status_code for _ in range(3)] == [200, 200, 200]
    refused = post(app, alice)
    assert refused.status_code == 429
    assert refused.get_json() == {
        "error": "too_many_requests",
        "error_description": "Rate limit exceeded: 3 per 1 minute",
    }
    assert 0 < int(refused.headers["Retry-After"]) <= 61
    assert refused.headers["X-RateLimit-Limit"] == "3"
    # Another user, even from the same address, is not held back; nor is a new token of alice's.
    assert post(app, bob).status_code == 200
    assert post(app, issuer.mint(RESOURCE, sub="alice")).status_code == 429
    stop_worker(app)


def test_refused_credentials_are_counted_per_address(issuer: MockIssuer, tmp_path: Path) -> None:
    app = limited_app(issuer, tmp_path, MCP_RATE_LIMIT_FAILED_AUTH="2/minute")
    guesses = [post(app, "not-a-real-token"), post(app, None), post(app, "another-guess")]
    assert [r.status_code for r in guesses] == [401, 401, 429]
    assert guesses[2].get_json() == {
        "error": "too_many_requests",
        "error_description": "Too many refused credentials from this address; retry later",
    }
    assert 0 < int(guesses[2].headers["Retry-After"]) <= 61
    assert "WWW-Authenticate" not in guesses[2].headers
    # A valid token from the same address still works; another address may still fail normally.
    assert post(app, issuer.mint(RESOURCE)).status_code == 200
    assert post(app, "guess", address="10.0.0.2").status_code == 401
    stop_worker(app)


def test_opaque_tokens_past_the_limit_are_never_introspected(issuer: MockIssuer, tmp_path: Path) -> None:
    """The limit is asked before the call to the authorization server, not after its answer."""
    client_id, secret = issuer.introspection_client
    app = limited_app(
        issuer,
        tmp_path,
        MCP_RATE_LIMIT_FAILED_AUTH="5/minute",
        MCP_INTROSPECTION_URL=issuer.introspection_url,
        MCP_INTROSPECTION_CLIENT_ID=client_id,
        MCP_INTROSPECTION_CLIENT_SECRET=secret,
    )
    before = issuer.introspections()
    statuses = [post(app, f"random-opaque-{n}").status_code for n in range(50)]
    assert statuses == [401] * 5 + [429] * 45
    assert issuer.introspections() == before + 5
    # A known valid opaque token is judged from the cache without a call, so it is never held back.
    issuer.opaque_tokens["known-good"] = {
        "active": True,
        "iss": issuer.issuer,
        "sub": "opaque-user",
        "aud": RESOURCE,
        "exp": int(time.time()) + 600,
    }
    assert post(app, "known-good", address="10.0.0.9").status_code == 200
    assert post(app, "known-good").status_code == 200
    assert issuer.introspections() == before + 6
    # JWTs are verified locally and still pass.
    assert post(app, issuer.mint(RESOURCE)).status_code == 200
    stop_worker(app)
    issuer.opaque_tokens.clear()


def test_an_unknown_kid_past_the_limit_fetches_no_keys(issuer: MockIssuer, tmp_path: Path) -> None:
    app = limited_app(issuer, tmp_path, MCP_RATE_LIMIT_FAILED_AUTH="2/minute", MCP_JWKS_REFETCH_COOLDOWN="1")
    assert post(app, issuer.mint(RESOURCE)).status_code == 200  # the keys are loaded
    assert [post(app, "guess").status_code for _ in range(2)] == [401, 401]
    time.sleep(1.1)  # past the refetch cooldown: a token with an unknown kid would now cause a fetch
    fetches = issuer.key_fetches()
    refused = post(app, issuer.mint(RESOURCE, header={"kid": "never-published"}))
    assert refused.status_code == 429
    assert refused.get_json()["error_description"] == "Too many refused credentials from this address; retry later"
    assert issuer.key_fetches() == fetches
    # From another address the same token costs one fetch and its answer.
    other = post(app, issuer.mint(RESOURCE, header={"kid": "never-published"}), address="10.0.0.2")
    assert other.status_code == 401
    assert issuer.key_fetches() == fetches + 1
    stop_worker(app)


def test_public_documents_are_not_limited(issuer: MockIssuer, tmp_path: Path) -> None:
    app = limited_app(issuer, tmp_path, MCP_RATE_LIMIT="1/minute", MCP_RATE_LIMIT_FAILED_AUTH="1/minute")
    client = app.test_client()
    assert {client.get("/.well-known/oauth-protected-resource/mcp").status_code for _ in range(5)} == {200}
    assert {client.get("/healthz").status_code for _ in range(5)} == {200}
    stop_worker(app)


def test_off(issuer: MockIssuer, tmp_path: Path) -> None:
    app = limited_app(issuer, tmp_path, MCP_RATE_LIMIT="off")
    assert "mcp_rate_limits" not in app.extensions
    assert [post(app, "guess").status_code for _ in range(70)] == [401] * 70
    stop_worker(app)


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("MCP_RATE_LIMIT", "lots", "MCP_RATE_LIMIT: 'lots' is not a rate limit like '120/minute;2000/hour'"),
        (
            "MCP_RATE_LIMIT_FAILED_AUTH",
            "off",
            "MCP_RATE_LIMIT_FAILED_AUTH: 'off' is not a rate limit like '120/minute;2000/hour'",
        ),
        (
            "MCP_RATE_LIMIT_STORAGE",
            "mongodb://x",
            "MCP_RATE_LIMIT_STORAGE: must be memory:// or a redis:// URL, not 'mongodb://x'",
        ),
    ],
)
def test_settings(variable: str, value: str, message: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_mapping({"MCP_DEV": "1", variable: value})
    assert str(caught.value) == message


def test_memory_counters_start_no_timer_thread_and_still_expire(monkeypatch: pytest.MonkeyPatch) -> None:
    """limits' MemoryStorage starts a thread every 10 ms while requests come; ours expires counters inline."""
    import threading

    from limits import parse_many
    from limits.strategies import FixedWindowRateLimiter

    from app import rate_limits

    clock = [1_000_000.0]
    monkeypatch.setattr(rate_limits.time, "time", lambda: clock[0])
    monkeypatch.setattr("limits.storage.memory.time.time", lambda: clock[0])
    monkeypatch.setattr("limits.strategies.time.time", lambda: clock[0], raising=False)
    storage = rate_limits.rate_limit_storage("memory://")
    assert isinstance(storage, rate_limits.TimerlessMemoryStorage)
    before = threading.active_count()
    limiter = FixedWindowRateLimiter(storage)
    three = parse_many("3/minute")[0]
    assert [limiter.hit(three, "alice") for _ in range(4)] == [True, True, True, False]
    assert [limiter.hit(three, "bob") for _ in range(2)] == [True, True]
    assert threading.active_count() <= before
    clock[0] += 61  # the window has passed: alice counts from zero again
    assert limiter.hit(three, "alice") is True
    # bob's counter is not read again: the sweep drops it
    assert not any(key.endswith("/bob") for key in storage.storage)
    assert storage.get(three.key_for("alice")) == 1


PROXY_WARNING = (
    "requests arrive through a proxy (they carry X-Forwarded-For or Forwarded) but MCP_TRUSTED_PROXIES is 0: every "
    "client then shares the proxy's address 127.0.0.1, and with it one failed-credentials limit "
    "(MCP_RATE_LIMIT_FAILED_AUTH). Behind the shipped nginx site set MCP_TRUSTED_PROXIES=1"
)


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and r.name == "app.auth"]


def test_a_proxy_the_server_does_not_trust_is_named_once(
    issuer: MockIssuer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = limited_app(issuer, tmp_path)
    client = app.test_client()
    forwarded = {**request_headers("tools/list"), "X-Forwarded-For": "198.51.100.7"}
    caplog.set_level("WARNING", logger="app.auth")
    assert client.post("/mcp", headers=request_headers("tools/list"), json=LIST).status_code == 401
    assert warnings_of(caplog) == []  # a direct request says nothing about proxies
    for _ in range(3):
        assert client.post("/mcp", headers=forwarded, json=LIST).status_code == 401
    assert warnings_of(caplog) == [PROXY_WARNING]
    stop_worker(app)


def test_a_trusted_proxy_is_not_warned_about(
    issuer: MockIssuer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = limited_app(issuer, tmp_path, MCP_TRUSTED_PROXIES="1")
    caplog.set_level("WARNING", logger="app.auth")
    forwarded = {**request_headers("tools/list"), "X-Forwarded-For": "198.51.100.7"}
    assert app.test_client().post("/mcp", headers=forwarded, json=LIST).status_code == 401
    assert warnings_of(caplog) == []
    stop_worker(app)


def test_behind_a_trusted_proxy_each_client_has_its_own_failed_credentials_bucket(
    issuer: MockIssuer, tmp_path: Path
) -> None:
    app = limited_app(issuer, tmp_path, MCP_TRUSTED_PROXIES="1", MCP_RATE_LIMIT_FAILED_AUTH="2/minute")
    client = app.test_client()

    def via_proxy(client_address: str) -> int:
        headers = {**request_headers("tools/list", token="guess"), "X-Forwarded-For": client_address}
        response = client.post("/mcp", headers=headers, json=LIST, environ_base={"REMOTE_ADDR": "127.0.0.1"})
        response.close()
        return response.status_code

    assert [via_proxy("198.51.100.7") for _ in range(3)] == [401, 401, 429]
    assert via_proxy("203.0.113.20") == 401  # another client behind the same proxy is not held back
    stop_worker(app)


PER_WORKER_WARNING = (
    "rate limits count per worker process with MCP_RATE_LIMIT_STORAGE=memory://; "
    "use redis://... to share them across 2 workers"
)


def test_memory_storage_under_two_workers_is_warned_about(
    issuer: MockIssuer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = limited_app(issuer, tmp_path, MCP_WORKERS="2", MCP_STATE_SECRET="s" * 40)
    stop_worker(app)
    assert [r.getMessage() for r in caplog.records if r.name == "app.rate_limits"] == [PER_WORKER_WARNING]


@pytest.mark.e2e
def test_gunicorns_default_two_workers_warn_about_memory_storage(issuer: MockIssuer, tmp_path: Path) -> None:
    """gunicorn runs 2 workers unless told otherwise, and each worker's settings know it: every worker warns."""
    server = start_app(issuer, tmp_path, workers=2)
    try:
        # /readyz answers once one worker is up; the other may still be loading the app.
        assert wait_for(lambda: server.process.log().count(PER_WORKER_WARNING) == 2, timeout=30), server.process.log()
    finally:
        server.stop()
