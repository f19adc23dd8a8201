"""Outbound requests to the authorization server: a redirect never takes them to another origin."""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from app import create_app
from app import stop_worker
from app.auth.jwks import KeyFetchError
from app.auth.jwks import RemoteJWKS
from app.auth.jwks import fetch_json
from app.auth.outbound import open_url
from app.serving import run_slot
from app.serving.run_slot import RunSlot
from app.settings import Settings
from tests.conftest import RESOURCE
from tests.support.issuer import MockIssuer
from tests.support.jsonrpc import request_body
from tests.support.jsonrpc import request_headers


class Redirector:
    """A loopback server answering each path with a redirect to where the test says, or with JSON."""

    def __init__(self) -> None:
        self.redirects: dict[str, tuple[int, str]] = {}
        self.documents: dict[str, dict[str, Any]] = {}
        self.seen: list[tuple[str, str, str | None]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                outer.seen.append((self.command, self.path, self.headers.get("Authorization")))
                if self.path in outer.redirects:
                    status, location = outer.redirects[self.path]
                    self.send_response(status)
                    self.send_header("Location", location)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = json.dumps(outer.documents.get(self.path, {"error": "not found"})).encode()
                self.send_response(200 if self.path in outer.documents else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = _answer
            do_POST = _answer

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(10)


@pytest.fixture
def first() -> Iterator[Redirector]:
    server = Redirector()
    yield server
    server.close()


@pytest.fixture
def elsewhere() -> Iterator[Redirector]:
    server = Redirector()
    yield server
    server.close()


KEYS = {"keys": [{"kty": "EC", "crv": "P-256", "x": "x", "y": "y"}]}


class TestKeySetAndMetadataFetches:
    def test_a_redirect_within_the_origin_is_followed(self, first: Redirector) -> None:
        first.redirects["/old-keys"] = (301, "/keys")
        first.documents["/keys"] = KEYS
        assert fetch_json(first.origin + "/old-keys") == KEYS

    @pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
    def test_a_redirect_to_another_origin_is_refused(
        self, first: Redirector, elsewhere: Redirector, status: int
    ) -> None:
        first.redirects["/keys"] = (status, elsewhere.origin + "/keys")
        elsewhere.documents["/keys"] = KEYS
        with pytest.raises(KeyFetchError) as refused:
            fetch_json(first.origin + "/keys")
        assert f"refused a redirect to another origin, '{elsewhere.origin}/keys' (HTTP {status})" in str(refused.value)
        assert elsewhere.seen == []

    def test_a_redirect_to_another_scheme_is_refused_before_any_connection(self, first: Redirector) -> None:
        # https to http is the dangerous direction; any change of scheme is another origin.
        target = first.origin.replace("http://", "https://") + "/keys"
        first.redirects["/keys"] = (302, target)
        with pytest.raises(KeyFetchError) as refused:
            fetch_json(first.origin + "/keys")
        assert f"refused a redirect to another origin, '{target}' (HTTP 302)" in str(refused.value)
        assert first.seen == [("GET", "/keys", None)]

    def test_a_redirect_to_another_host_name_is_refused(self, first: Redirector, elsewhere: Redirector) -> None:
        port = elsewhere.origin.rsplit(":", 1)[1]
        first.redirects["/keys"] = (302, f"http://localhost:{port}/keys")
        with pytest.raises(KeyFetchError):
            fetch_json(first.origin + "/keys")
        assert elsewhere.seen == []

    def test_discovery_does_not_follow_metadata_elsewhere(self, first: Redirector, elsewhere: Redirector) -> None:
        issuer = first.origin
        first.redirects["/.well-known/oauth-authorization-server"] = (302, elsewhere.origin + "/metadata")
        first.redirects["/.well-known/openid-configuration"] = (302, elsewhere.origin + "/metadata")
        elsewhere.documents["/metadata"] = {"issuer": issuer, "jwks_uri": elsewhere.origin + "/keys"}
        with pytest.raises(KeyFetchError) as refused:
            RemoteJWKS(issuer).discover()
        assert "refused a redirect to another origin" in str(refused.value)
        assert elsewhere.seen == []


class TestIntrospection:
    @pytest.fixture
    def app(self, issuer: MockIssuer, first: Redirector, tmp_path: Path) -> Iterator[Flask]:
        application = create_app(
            Settings.from_mapping(
                {
                    "MCP_RESOURCE_URL": RESOURCE,
                    "MCP_ISSUER": issuer.issuer,
                    "MCP_INSTANCE_PATH": str(tmp_path),
                    "MCP_INTROSPECTION_URL": first.origin + "/introspect",
                    "MCP_INTROSPECTION_CLIENT_ID": "mcp-server",
                    "MCP_INTROSPECTION_CLIENT_SECRET": "introspection-secret",
                }
            )
        )
        yield application
        stop_worker(application)

    @pytest.mark.parametrize("status", [302, 307, 308])
    @pytest.mark.parametrize("same_origin", [True, False], ids=["same-origin", "elsewhere"])
    def test_no_redirect_is_followed_and_the_secret_goes_nowhere_else(
        self, app: Flask, first: Redirector, elsewhere: Redirector, status: int, same_origin: bool
    ) -> None:
        target = (first.origin if same_origin else elsewhere.origin) + "/other"
        first.redirects["/introspect"] = (status, target)
        response = app.test_client().post(
            "/mcp", headers=request_headers("tools/list", token="opaque-token"), json=request_body("tools/list")
        )
        assert response.status_code == 503
        assert response.get_json()["error"] == "temporarily_unavailable"
        assert [path for _, path, _ in first.seen] == ["/introspect"]
        assert elsewhere.seen == []


def test_the_wait_for_the_authorization_server_lets_another_thread_serve() -> None:
    """A slow introspection or key fetch does not hold the worker: the run slot passes on while it waits."""
    slot = RunSlot()
    other_serving = threading.Event()

    class Slow(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            # Answers only once another thread has taken the slot the request held when it called out.
            served = other_serving.wait(5)
            body = json.dumps({"other thread served": served}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    other = threading.Thread(target=lambda: (slot.take(), other_serving.set()), daemon=True)
    run_slot.install(slot)
    try:
        slot.take()
        other.start()
        request = urllib.request.Request(f"http://127.0.0.1:{server.server_port}/introspect", data=b"token=x")
        answer = json.loads(open_url(request, timeout=10, limit=1000))
        assert answer == {"other thread served": True}
        assert not slot.holds()  # the request went on outside the slot
        other.join(5)
    finally:
        run_slot.install(None)
        server.shutdown()
        server.server_close()
