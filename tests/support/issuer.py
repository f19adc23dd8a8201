"""A stand-in for a cloud identity provider: RFC 8414 metadata and a JWK Set over real HTTP.

It runs on a loopback port in a thread and speaks the wire format real
providers speak, so the server under test discovers and fetches keys exactly
as it would in production. Tests can rotate keys, take the keys endpoint
down, and count fetches.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler
from http.server import ThreadingHTTPServer
from typing import Any

from joserfc import jwt
from joserfc.jwk import ECKey
from joserfc.jwk import Key
from joserfc.jwk import OKPKey
from joserfc.jwk import RSAKey


class MockIssuer:
    def __init__(self, path: str = "") -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        host, port = self._server.server_address[:2]
        self.origin = f"http://{host}:{port}"
        self.issuer = self.origin + path
        self.jwks_uri = self.origin + "/keys"
        self.key = RSAKey.generate_key(2048, auto_kid=True)
        self.published: list[Key] = [self.key]
        self.down = False
        self.clock_offset = 0.0  # seconds added to the Date header this issuer sends
        self.requests: list[str] = []
        # RFC 7662: opaque token -> introspection answer; the client credentials the server must use.
        self.opaque_tokens: dict[str, dict[str, Any]] = {}
        self.introspection_client = ("mcp-server", "introspection-secret")
        self.introspection_delay = 0.0  # seconds each introspection answer takes (a slow authorization server)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> MockIssuer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -- what the server under test fetches

    def metadata(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "authorization_endpoint": self.origin + "/authorize",
            "token_endpoint": self.origin + "/token",
            "jwks_uri": self.jwks_uri,
            "response_types_supported": ["code"],
            "code_challenge_methods_supported": ["S256"],
        }

    def jwks(self) -> dict[str, Any]:
        return {"keys": [{**k.as_dict(private=False), "use": "sig"} for k in self.published]}

    def key_fetches(self) -> int:
        return sum(1 for path in self.requests if path == "/keys")

    def rotate(self) -> Key:
        """Publish a new signing key beside the old one and sign with it from now on."""
        self.key = RSAKey.generate_key(2048, auto_kid=True)
        self.published.append(self.key)
        return self.key

    @staticmethod
    def new_key(kind: str = "RSA") -> Key:
        if kind == "EC":
            return ECKey.generate_key("P-256", auto_kid=True)
        if kind == "OKP":
            return OKPKey.generate_key("Ed25519", auto_kid=True)
        return RSAKey.generate_key(2048, auto_kid=True)

    # -- tokens

    def claims(self, audience: str, **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": "alice",
            "aud": audience,
            "client_id": "test-client",
            "scope": "",
            "iat": now,
            "exp": now + 600,
            "jti": uuid.uuid4().hex,
        }
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}

    def mint(
        self,
        audience: str,
        *,
        scopes: Iterable[str] = (),
        key: Key | None = None,
        header: dict[str, Any] | None = None,
        alg: str = "RS256",
        **claims: Any,
    ) -> str:
        key = key or self.key
        full_header: dict[str, Any] = {"alg": alg, "kid": key.kid, "typ": "at+jwt"}
        full_header.update(header or {})
        full_header = {k: v for k, v in full_header.items() if v is not None}
        body = self.claims(audience, scope=" ".join(scopes), **claims)
        return jwt.encode(full_header, body, key, algorithms=[full_header["alg"]])

    # -- HTTP

    @property
    def introspection_url(self) -> str:
        return self.origin + "/introspect"

    def introspections(self) -> int:
        return sum(1 for path in self.requests if path == "POST /introspect")

    def _introspect(self, authorization: str | None, form: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
        user, secret = (urllib.parse.quote_plus(part) for part in self.introspection_client)
        expected = "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()
        if authorization != expected:
            return 401, {"error": "invalid_client"}
        token = (form.get("token") or [""])[0]
        return 200, self.opaque_tokens.get(token, {"active": False})

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                issuer.requests.append(f"POST {self.path}")
                length = int(self.headers.get("Content-Length") or 0)
                form = urllib.parse.parse_qs(self.rfile.read(length).decode())
                if issuer.down or self.path != "/introspect":
                    self.send_response(503 if issuer.down else 404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if issuer.introspection_delay:
                    time.sleep(issuer.introspection_delay)
                status, answer = issuer._introspect(self.headers.get("Authorization"), form)
                body = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                issuer.requests.append(self.path)
                documents = {
                    "/.well-known/oauth-authorization-server"
                    + issuer.issuer.removeprefix(issuer.origin): issuer.metadata,
                    "/keys": issuer.jwks,
                }
                if issuer.down or self.path not in documents:
                    self.send_response(503 if issuer.down else 404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = json.dumps(documents[self.path]()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def date_time_string(self, timestamp: float | None = None) -> str:
                return super().date_time_string(time.time() + issuer.clock_offset)

        return Handler
