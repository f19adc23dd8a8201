"""Raw HTTP against the real gunicorn: exact statuses, challenge headers and documents."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import httpx2
import pytest

from tests.support.dpop import DEFAULT_ALGORITHMS
from tests.support.dpop import DEFAULT_ALGS
from tests.support.issuer import MockIssuer
from tests.support.jsonrpc import HANDSHAKE
from tests.support.jsonrpc import call_tool
from tests.support.jsonrpc import request_body
from tests.support.jsonrpc import request_headers
from tests.support.jsonrpc import result_of
from tests.support.servers import RunningServer
from tests.support.servers import start_app

pytestmark = pytest.mark.e2e


def metadata_url(server: RunningServer) -> str:
    return f"{server.base}/.well-known/oauth-protected-resource/mcp"


def test_no_token_challenge(gunicorn_server: RunningServer) -> None:
    response = httpx2.post(gunicorn_server.url, headers=request_headers("tools/list"), json=request_body("tools/list"))
    assert response.status_code == 401
    tail = f'scope="todo:read todo:write", resource_metadata="{metadata_url(gunicorn_server)}"'
    assert response.headers.get_list("www-authenticate") == [f"Bearer {tail}", f"DPoP {DEFAULT_ALGS}, {tail}"]
    assert response.json() == {"error": "unauthorized", "error_description": "An access token is required"}


def test_token_for_another_resource_is_invalid(gunicorn_server: RunningServer) -> None:
    token = gunicorn_server.token(aud=gunicorn_server.base + "/other-mcp")
    response = httpx2.post(
        gunicorn_server.url, headers=request_headers("tools/list", token=token), json=request_body("tools/list")
    )
    assert response.status_code == 401
    error = 'error="invalid_token", error_description="The access token was not issued for this resource"'
    tail = f'scope="todo:read todo:write", resource_metadata="{metadata_url(gunicorn_server)}"'
    assert response.headers.get_list("www-authenticate") == [
        f"Bearer {error}, {tail}",
        f"DPoP {error}, {DEFAULT_ALGS}, {tail}",
    ]


@pytest.mark.parametrize("era", ["2026-07-28", HANDSHAKE])
def test_step_up_challenge(gunicorn_server: RunningServer, era: str) -> None:
    headers, body = call_tool("delete_todo", {"id": 1}, era=era, token=gunicorn_server.token("todo:read", "todo:write"))
    response = httpx2.post(gunicorn_server.url, headers=headers, content=body)
    assert response.status_code == 403
    error = 'error="insufficient_scope", error_description="This call requires the scopes: todo:delete"'
    tail = f'scope="todo:delete", resource_metadata="{metadata_url(gunicorn_server)}"'
    assert response.headers.get_list("www-authenticate") == [
        f"Bearer {error}, {tail}",
        f"DPoP {error}, {DEFAULT_ALGS}, {tail}",
    ]
    assert response.json() == {
        "error": "insufficient_scope",
        "error_description": "This call requires the scopes: todo:delete",
    }


@pytest.mark.parametrize("path", ["/.well-known/oauth-protected-resource/mcp", "/.well-known/oauth-protected-resource"])
def test_metadata_documents(gunicorn_server: RunningServer, path: str) -> None:
    response = httpx2.get(gunicorn_server.base + path)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "public, max-age=3600"
    assert response.json() == {
        "resource": gunicorn_server.url,
        "authorization_servers": [gunicorn_server.issuer.issuer],
        "bearer_methods_supported": ["header"],
        "resource_name": "Flask MCP server",
        "scopes_supported": ["todo:read", "todo:write"],
        "dpop_signing_alg_values_supported": DEFAULT_ALGORITHMS,
    }


def test_trailing_slash_is_served_without_a_redirect(gunicorn_server: RunningServer) -> None:
    headers, body = call_tool("greet_user", {"name": "slash"}, token=gunicorn_server.token())
    response = httpx2.post(gunicorn_server.url + "/", headers=headers, content=body, follow_redirects=False)
    assert response.status_code == 200
    assert result_of(response.headers["content-type"], response.content)["result"]["content"][0]["text"] == (
        "Hello, slash!"
    )


def test_a_16_kib_authorization_header_reaches_the_app(gunicorn_server: RunningServer) -> None:
    token = gunicorn_server.token(padding="x" * 11_800)
    assert len("Bearer " + token) >= 16 * 1024
    headers, body = call_tool("greet_user", {"name": "big"}, token=token)
    response = httpx2.post(gunicorn_server.url, headers=headers, content=body)
    assert response.status_code == 200


def test_an_oversized_header_is_a_clear_4xx(gunicorn_server: RunningServer) -> None:
    response = httpx2.post(gunicorn_server.url, headers={"Authorization": "Bearer " + "a" * 40_000})
    assert response.status_code == 431
    assert "Traceback" not in response.text


def test_health(gunicorn_server: RunningServer) -> None:
    assert httpx2.get(gunicorn_server.base + "/healthz").json() == {"status": "ok"}
    assert httpx2.get(gunicorn_server.base + "/readyz").json() == {"status": "ready", "signing_keys": "fresh"}


@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_stateless_mode_has_no_standalone_stream_or_session(gunicorn_server: RunningServer, method: str) -> None:
    headers = {"Accept": "text/event-stream", "Authorization": f"Bearer {gunicorn_server.token()}"}
    response = httpx2.request(method, gunicorn_server.url, headers={**headers, "MCP-Protocol-Version": HANDSHAKE})
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert response.json() == {
        "error": "method_not_allowed",
        "error_description": "This server is stateless: send every message as a POST",
    }


@pytest.fixture(scope="module")
def single_thread_server(issuer: MockIssuer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """One worker with one thread: a tool still running would block every later request."""
    server = start_app(issuer, tmp_path_factory.mktemp("single"), workers=1, threads=1)
    yield server
    server.stop()


@pytest.mark.parametrize("era", ["2026-07-28", HANDSHAKE])
def test_a_disconnect_cancels_the_running_tool(single_thread_server: RunningServer, era: str) -> None:
    headers, body = call_tool("count_to", {"n": 50}, era=era, token=single_thread_server.token())
    payload = json.loads(body)
    payload["params"].setdefault("_meta", {})["progressToken"] = 7
    raw = json.dumps(payload).encode()
    port = int(single_thread_server.base.rsplit(":", 1)[1])
    request = f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {len(raw)}\r\n"
    request += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request.encode() + raw)
        received = b""
        while b"notifications/progress" not in received:
            chunk = sock.recv(65536)
            assert chunk, received
            received += chunk
    # count_to(50) would hold the only thread for 10 s; cancelled, it frees it at its next step.
    started = time.monotonic()
    headers, body = call_tool("greet_user", {"name": "next"}, token=single_thread_server.token())
    response = httpx2.post(single_thread_server.url, headers=headers, content=body, timeout=30)
    assert response.status_code == 200
    assert time.monotonic() - started < 3
