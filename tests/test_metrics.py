"""/metrics in-process: who may scrape, and that each counter moves by exactly what happened.

The counters are process-wide (prometheus_client's default registry), so every
test measures a difference before and after. The multiprocess mode across
gunicorn workers is tested end to end in tests/deploy/test_metrics_workers.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from flask import Flask
from flask import jsonify
from flask import request
from prometheus_client import REGISTRY
from prometheus_client import CollectorRegistry
from prometheus_client import Counter
from prometheus_client import Histogram

from app import create_app
from app import metrics
from app.auth import public
from app.settings import Settings
from app.settings import SettingsError
from tests.conftest import Tokens
from tests.support.issuer import MockIssuer
from tests.support.jsonrpc import call_tool
from tests.support.jsonrpc import request_body
from tests.support.jsonrpc import request_headers
from tests.support.load import wait_for

METRICS_TOKEN = "metrics-secret-0123456789-abcdefghijklmnopqrstuvwxyz"
PROMETHEUS_TEXT = "text/plain; version=1.0.0; charset=utf-8"


def sample(name: str, **labels: str) -> float:
    """The sample as a scrape of this process would see it: the counts kept in memory written first."""
    metrics.tallies.flush()
    return REGISTRY.get_sample_value(name, labels) or 0.0


def delta(name: str, **labels: str) -> Callable[[], float]:
    """A function that tells how much the sample grew since this call."""
    before = sample(name, **labels)
    return lambda: sample(name, **labels) - before


def post(app: Flask, method: str, params: dict[str, object] | None = None, *, token: str | None = None) -> int:
    name = params.get("name") if params else None
    headers = request_headers(method, name if isinstance(name, str) else None, token=token)
    response = app.test_client().post("/mcp", headers=headers, json=request_body(method, params))
    response.get_data()
    response.close()
    return response.status_code


class TestWhoMayScrape:
    def test_a_direct_loopback_request_gets_the_prometheus_text(self, client: Flask) -> None:
        response = client.get("/metrics")
        assert response.status_code == 200
        assert response.headers["Content-Type"] == PROMETHEUS_TEXT
        assert response.headers["Cache-Control"] == "no-store"
        text = response.get_data(as_text=True)
        assert "# TYPE mcp_requests_total counter\n" in text
        assert "# TYPE mcp_auth_failures_total counter\n" in text
        assert "# TYPE mcp_tool_call_duration_seconds histogram\n" in text
        assert "# TYPE mcp_jwks_fetches_total counter\n" in text

    @pytest.mark.parametrize(
        "headers, remote",
        [
            pytest.param({"X-Forwarded-For": "203.0.113.9"}, "127.0.0.1", id="through nginx"),
            pytest.param({"X-Forwarded-For": "127.0.0.1"}, "127.0.0.1", id="forwarded loopback"),
            pytest.param({"X-Real-IP": "203.0.113.9"}, "127.0.0.1", id="x-real-ip"),
            pytest.param({"Forwarded": "for=203.0.113.9"}, "127.0.0.1", id="forwarded"),
            pytest.param({}, "203.0.113.9", id="remote peer"),
            pytest.param({}, "10.0.0.7", id="private peer"),
        ],
    )
    def test_anything_else_is_refused_without_a_token(
        self, client: Flask, headers: dict[str, str], remote: str
    ) -> None:
        response = client.get("/metrics", headers=headers, environ_base={"REMOTE_ADDR": remote})
        assert response.status_code == 403
        assert response.headers["Content-Type"] == "application/json"
        assert response.json == {
            "error": "forbidden",
            "error_description": "Metrics are served only to direct loopback requests, or with MCP_METRICS_TOKEN",
        }

    def test_an_mcp_access_token_does_not_open_metrics(self, client: Flask, tokens: Tokens) -> None:
        response = client.get("/metrics", headers=tokens.header(), environ_base={"REMOTE_ADDR": "203.0.113.9"})
        assert response.status_code == 403

    @pytest.fixture
    def token_app(self, settings: Settings) -> Iterator[Flask]:
        application = create_app(replace(settings, metrics_token=METRICS_TOKEN))
        yield application
        application.extensions["mcp_bridge"].loops.close()

    @pytest.mark.parametrize(
        "authorization",
        [
            pytest.param(None, id="none"),
            pytest.param("Bearer wrong", id="wrong"),
            pytest.param("Basic " + METRICS_TOKEN, id="other scheme"),
            pytest.param("Bearer " + METRICS_TOKEN[:-1], id="prefix"),
        ],
    )
    def test_with_a_token_configured_every_scrape_needs_it(self, token_app: Flask, authorization: str | None) -> None:
        headers = {"Authorization": authorization} if authorization else {}
        response = token_app.test_client().get("/metrics", headers=headers)
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == 'Bearer realm="metrics"'
        assert response.json == {
            "error": "invalid_token",
            "error_description": "Metrics require the bearer token configured in MCP_METRICS_TOKEN",
        }
        assert METRICS_TOKEN not in response.get_data(as_text=True)

    def test_the_token_opens_metrics_from_anywhere(self, token_app: Flask) -> None:
        response = token_app.test_client().get(
            "/metrics",
            headers={"Authorization": "bearer " + METRICS_TOKEN, "X-Forwarded-For": "203.0.113.9"},
            environ_base={"REMOTE_ADDR": "203.0.113.9"},
        )
        assert response.status_code == 200
        assert response.headers["Content-Type"] == PROMETHEUS_TEXT


class TestTallies:
    @pytest.fixture
    def registry(self) -> CollectorRegistry:
        """A registry of its own, so that these counts are the only ones."""
        return CollectorRegistry()

    def test_counts_and_observations_reach_the_values_as_one_at_a_time_would(self, registry: CollectorRegistry) -> None:
        counter = Counter("tallied", "counted", ["kind"], registry=registry)
        histogram = Histogram("tallied_seconds", "observed", ["tool"], buckets=(0.1, 1.0), registry=registry)
        tallies = metrics.Tallies(interval=3600)
        for _ in range(3):
            tallies.count(counter.labels("a"))
        tallies.count(counter.labels("b"))
        for amount in (0.05, 0.1, 0.5, 1.0, 7.0):  # an amount equal to a bound belongs to that bound's bucket
            tallies.observe(histogram.labels("t"), amount)
        assert registry.get_sample_value("tallied_total", {"kind": "a"}) == 0

        tallies.flush()
        get = registry.get_sample_value
        assert [get("tallied_total", {"kind": kind}) for kind in ("a", "b")] == [3, 1]
        assert [get("tallied_seconds_bucket", {"tool": "t", "le": le}) for le in ("0.1", "1.0", "+Inf")] == [2, 4, 5]
        assert get("tallied_seconds_count", {"tool": "t"}) == 5
        assert get("tallied_seconds_sum", {"tool": "t"}) == pytest.approx(8.65)
        tallies.flush()  # nothing new: nothing added twice
        assert get("tallied_total", {"kind": "a"}) == 3

    def test_a_thread_writes_them_without_a_scrape(self, registry: CollectorRegistry) -> None:
        counter = Counter("tallied_later", "counted", registry=registry)
        tallies = metrics.Tallies(interval=0.05)
        tallies.count(counter)
        assert wait_for(lambda: registry.get_sample_value("tallied_later_total") == 1, 10)

    def test_a_scrape_includes_the_request_before_it(self, app: Flask, tokens: Tokens) -> None:
        post(app, "tools/call", {"name": "greet_user", "arguments": {"name": "Ada"}}, token=tokens.mint())
        before = sample("mcp_requests_total", method="tools/call", tool="greet_user", status="200")
        post(app, "tools/call", {"name": "greet_user", "arguments": {"name": "Ada"}}, token=tokens.mint())
        assert app.test_client().get("/metrics").status_code == 200
        labels = {"method": "tools/call", "tool": "greet_user", "status": "200"}
        assert REGISTRY.get_sample_value("mcp_requests_total", labels) == before + 1  # written by the scrape


class TestCounters:
    def test_a_tool_call_counts_once_with_its_tool_and_is_timed(self, app: Flask, tokens: Tokens) -> None:
        calls = delta("mcp_requests_total", method="tools/call", tool="greet_user", status="200")
        timed = delta("mcp_tool_call_duration_seconds_count", tool="greet_user")
        assert post(app, "tools/call", {"name": "greet_user", "arguments": {"name": "Ada"}}, token=tokens.mint()) == 200
        assert (calls(), timed()) == (1, 1)

    def test_a_streamed_call_is_timed_to_its_last_event(self, app: Flask, tokens: Tokens) -> None:
        headers, body = call_tool("count_to", {"n": 3}, token=tokens.mint())
        payload = json.loads(body)
        payload["params"]["_meta"]["progressToken"] = "p"
        seconds = delta("mcp_tool_call_duration_seconds_sum", tool="count_to")
        response = app.test_client().post("/mcp", headers=headers, json=payload)
        assert response.headers["Content-Type"].startswith("text/event-stream")
        response.get_data()
        response.close()
        assert 0.55 <= seconds() < 30

    def test_method_and_unknown_names_fold_into_bounded_labels(self, app: Flask, tokens: Tokens) -> None:
        token = tokens.mint()
        listed = delta("mcp_requests_total", method="tools/list", tool="-", status="200")
        unknown_tool = delta("mcp_requests_total", method="tools/call", tool="other", status="200")
        unknown_method = delta("mcp_requests_total", method="other", tool="-", status="404")
        post(app, "tools/list", token=token)
        post(app, "tools/call", {"name": "no_such_tool_" + "x" * 40, "arguments": {}}, token=token)
        post(app, "made/up", token=token)
        assert (listed(), unknown_tool(), unknown_method()) == (1, 1, 1)
        text = app.test_client().get("/metrics").get_data(as_text=True)
        assert "no_such_tool" not in text
        assert "made/up" not in text

    def test_refusals_count_by_reason_without_reading_the_body(self, app: Flask, tokens: Tokens) -> None:
        no_token = delta("mcp_auth_failures_total", reason="no_token")
        invalid = delta("mcp_auth_failures_total", reason="invalid_token")
        malformed = delta("mcp_auth_failures_total", reason="invalid_request")
        scope = delta("mcp_auth_failures_total", reason="insufficient_scope")
        unread_401 = delta("mcp_requests_total", method="-", tool="-", status="401")
        refused_call = delta("mcp_requests_total", method="tools/call", tool="add_todo", status="403")
        add = {"name": "add_todo", "arguments": {"title": "x"}}
        assert post(app, "tools/list") == 401
        assert post(app, "tools/list", token=tokens.mint(exp=1_000_000)) == 401
        assert app.test_client().post("/mcp", headers={"Authorization": "Basic abc"}).status_code == 400
        assert post(app, "tools/call", add, token=tokens.mint("todo:read")) == 403
        assert (no_token(), invalid(), malformed(), scope()) == (1, 1, 1, 1)
        assert (unread_401(), refused_call()) == (2, 1)

    def test_other_paths_are_not_counted(self, client: Flask) -> None:
        before = sum(m.value for metric in REGISTRY.collect() if metric.name == "mcp_requests" for m in metric.samples)
        client.get("/healthz")
        client.get("/.well-known/oauth-protected-resource/mcp")
        after = sum(m.value for metric in REGISTRY.collect() if metric.name == "mcp_requests" for m in metric.samples)
        assert after == before

    def test_key_fetches_count_by_outcome(self, app: Flask, issuer: MockIssuer, tokens: Tokens) -> None:
        ok = delta("mcp_jwks_fetches_total", outcome="ok")
        error = delta("mcp_jwks_fetches_total", outcome="error")
        assert post(app, "tools/list", token=tokens.mint()) == 200
        assert (ok(), error()) == (1, 0)
        issuer.down = True
        try:
            # An unknown kid asks for a refetch; the cooldown has not passed, so none happens.
            assert post(app, "tools/list", token=tokens.mint(header={"kid": "unknown"})) == 401
            assert (ok(), error()) == (1, 0)
            app.extensions["mcp_keys"][0]._last_attempt = None  # as if the cooldown had passed
            assert post(app, "tools/list", token=tokens.mint(header={"kid": "unknown"})) == 401
        finally:
            issuer.down = False
        assert (ok(), error()) == (1, 1)


class TestMultiprocessSetting:
    def test_a_directory_only_in_dotenv_is_refused(self, settings: Settings, tmp_path: Path) -> None:
        # This test process imported prometheus_client without PROMETHEUS_MULTIPROC_DIR.
        with pytest.raises(SettingsError) as raised:
            create_app(replace(settings, metrics_dir=str(tmp_path)))
        assert str(raised.value) == (
            "PROMETHEUS_MULTIPROC_DIR: must be set in the process environment before the server starts "
            "(gunicorn.conf.py does that), not only in .env"
        )


class TestProxyFix:
    @staticmethod
    def probe(app: Flask) -> Flask:
        @app.get("/_probe")
        @public
        def probe() -> object:
            return jsonify(remote_addr=request.remote_addr, scheme=request.scheme, host=request.host)

        return app

    FORWARDED = {"X-Forwarded-For": "198.51.100.1, 203.0.113.9", "X-Forwarded-Proto": "https", "Host": "localhost"}

    def test_without_trusted_proxies_forwarded_headers_are_ignored(self, settings: Settings) -> None:
        app = self.probe(create_app(settings))
        response = app.test_client().get("/_probe", headers=self.FORWARDED)
        assert response.json == {"remote_addr": "127.0.0.1", "scheme": "http", "host": "localhost"}
        assert isinstance(app, Flask)

    def test_one_trusted_hop_believes_the_last_address_and_the_scheme(self, settings: Settings) -> None:
        app = self.probe(create_app(replace(settings, trusted_proxies=1)))
        response = app.test_client().get("/_probe", headers={**self.FORWARDED, "X-Forwarded-Host": "evil.example"})
        assert response.json == {"remote_addr": "203.0.113.9", "scheme": "https", "host": "localhost"}
        assert isinstance(app, Flask)

    def test_two_trusted_hops(self, settings: Settings) -> None:
        app = self.probe(create_app(replace(settings, trusted_proxies=2)))
        response = app.test_client().get("/_probe", headers={**self.FORWARDED, "X-Forwarded-Proto": "https, http"})
        assert response.json == {"remote_addr": "198.51.100.1", "scheme": "https", "host": "localhost"}
