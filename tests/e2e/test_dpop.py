"""DPoP end to end: the official SDK client, with proofs added in its httpx auth hook, against gunicorn.

The development server under the shipped gunicorn.conf.py (2 workers), and
once under ``flask run`` as ``make run`` starts it, is its own authorization
server. The SDK's ``OAuthClientProvider`` and
``ClientCredentialsOAuthProvider``, wrapped by tests/support/dpop.py, do
discovery, registration, consent, a DPoP token request, tool calls with a
fresh proof each, and a refresh with the bound refresh token. The token they
got is then refused without its proof, with a proof from another key and as
a bearer token.
"""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp.shared.auth import OAuthClientMetadata
from pydantic import AnyUrl

from tests.e2e.conftest import DevServer
from tests.e2e.conftest import start_dev_server
from tests.e2e.test_dev_authorization_server import REDIRECT_URI
from tests.e2e.test_dev_authorization_server import Recorder
from tests.e2e.test_dev_authorization_server import sdk_client
from tests.support.dpop import DEFAULT_ALGS
from tests.support.dpop import DPoPClientCredentialsProvider
from tests.support.dpop import DPoPKey
from tests.support.dpop import DPoPOAuthClientProvider
from tests.support.jsonrpc import request_body
from tests.support.jsonrpc import request_headers
from tests.support.mcp_client import json_of
from tests.support.oauth import ConsentBrowser
from tests.support.oauth import MemoryTokenStorage
from tests.support.servers import BIN
from tests.support.servers import ServerProcess
from tests.support.servers import free_port

pytestmark = [pytest.mark.e2e]


def dpop_provider(
    server: DevServer, browser: ConsentBrowser, storage: MemoryTokenStorage, key: DPoPKey
) -> DPoPOAuthClientProvider:
    metadata = OAuthClientMetadata(
        redirect_uris=[AnyUrl(REDIRECT_URI)],
        client_name="SDK DPoP client",
        grant_types=["authorization_code", "refresh_token"],
        token_endpoint_auth_method="none",
    )
    return DPoPOAuthClientProvider(
        server.url, metadata, storage, redirect_handler=browser.open, callback_handler=browser.callback, dpop_key=key
    )


def claims_of(token: str) -> dict[str, Any]:
    """A JWT's claims, unverified (the server verified them)."""
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


@pytest.fixture(scope="module")
def nonce_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    """Development mode under gunicorn with server nonces on (MCP_DPOP_NONCE=1) and 10-minute tokens."""
    server = start_dev_server(
        tmp_path_factory.mktemp("gunicorn-dpop"), MCP_SCOPES_SUPPORTED="todo:read", MCP_DPOP_NONCE="1"
    )
    yield server
    assert server.process.stop() == 0, server.process.log()


@pytest.fixture(scope="module")
def flask_run_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    """What ``make run`` starts: ``flask --app wsgi run`` in development mode (on a free port here)."""
    folder: Path = tmp_path_factory.mktemp("flask-run-dpop")
    port = free_port()
    env = {
        "MCP_DEV": "1",
        "MCP_RESOURCE_URL": f"http://127.0.0.1:{port}/mcp",
        "MCP_INSTANCE_PATH": str(folder / "instance"),
    }
    args = [str(BIN / "flask"), "--app", "wsgi", "run", "--host", "127.0.0.1", "--port", str(port)]
    process = ServerProcess(args, env, folder / "flask.log", f"http://127.0.0.1:{port}/readyz")
    yield DevServer(process, f"http://127.0.0.1:{port}", folder / "instance")
    assert process.stop(signal.SIGINT) == 0, process.log()  # Ctrl+C, as in a terminal


def challenge(server: DevServer, error: str, description: str) -> list[str]:
    """The pair of challenges a refusal through gunicorn carries (MCP_SCOPES_SUPPORTED=todo:read there)."""
    tail = f'scope="todo:read", resource_metadata="{server.base}/.well-known/oauth-protected-resource/mcp"'
    params = f'error="{error}", error_description="{description}", '
    bearer = f"Bearer {tail}" if error in ("invalid_dpop_proof", "use_dpop_nonce") else f"Bearer {params}{tail}"
    return [bearer, f"DPoP {params}{DEFAULT_ALGS}, {tail}"]


def raw_call(server: DevServer, authorization: str, proof: str | None = None) -> httpx2.Response:
    headers = {**request_headers("tools/list"), "Authorization": authorization, **({"DPoP": proof} if proof else {})}
    with httpx2.Client(timeout=30) as http:
        return http.post(server.url, headers=headers, json=request_body("tools/list"))


class TestSDKClientWithDPoP:
    @pytest.mark.anyio
    async def test_signs_in_with_dpop_and_nonces_then_calls_tools(self, nonce_server: DevServer) -> None:
        server = nonce_server
        key, storage, recorder = DPoPKey.generate("EC"), MemoryTokenStorage(), Recorder()
        auth = dpop_provider(server, ConsentBrowser("dpop-alice"), storage, key)
        async with sdk_client(server, auth, recorder) as client:
            whoami = json_of(await client.call_tool("whoami", {}))
            listed = await client.call_tool("list_todos", {})
            added = await client.call_tool("greet_user", {"name": "DPoP"})

        assert whoami["sub"] == "dpop-alice"
        assert whoami["scopes"] == ["todo:read"]
        assert listed.structured_content == {"todos": []}
        assert added.content[0].text == "Hello, DPoP!"
        # The whole dance, in order: refused, discovery, registration, the token request answered with
        # use_dpop_nonce (400) and retried with it, the retried call answered with use_dpop_nonce (401)
        # and retried with the resource server's own nonce, then the calls with a fresh proof each.
        sign_in = recorder.exchanges[: recorder.exchanges.index(("POST", "/mcp", 200)) + 1]
        assert sign_in == [
            ("POST", "/mcp", 401),
            ("GET", "/.well-known/oauth-protected-resource/mcp", 200),
            ("GET", "/.well-known/oauth-authorization-server/dev-issuer", 200),
            ("POST", "/dev-issuer/register", 201),
            ("POST", "/dev-issuer/token", 400),
            ("POST", "/dev-issuer/token", 200),
            ("POST", "/mcp", 401),
            ("POST", "/mcp", 200),
        ]
        assert auth.nonce_retries == 2
        assert auth.token_types == ["DPoP"]
        token = storage.history[0].access_token
        assert claims_of(token)["cnf"] == {"jkt": key.jkt}
        assert auth.proofs.count(("POST", server.issuer + "/token")) == 2
        # Every MCP request after sign-in carried a proof; each of them was accepted once.
        assert auth.proofs.count(("POST", server.url)) == 1 + recorder.exchanges.count(("POST", "/mcp", 200))
        assert recorder.exchanges.count(("POST", "/mcp", 200)) >= 3

    @pytest.mark.anyio
    async def test_the_token_is_refused_without_its_proof_with_another_key_and_as_bearer(
        self, nonce_server: DevServer
    ) -> None:
        server = nonce_server
        key, storage = DPoPKey.generate("EC"), MemoryTokenStorage()
        auth = dpop_provider(server, ConsentBrowser("dpop-bob"), storage, key)
        async with sdk_client(server, auth) as client:
            assert json_of(await client.call_tool("whoami", {}))["sub"] == "dpop-bob"
        token = storage.history[-1].access_token
        nonce = auth.nonces[server.url]  # the resource server's, still fresh

        without_proof = raw_call(server, f"DPoP {token}")
        description = "A DPoP proof is required: send one in the DPoP header"
        assert without_proof.status_code == 401, without_proof.text
        assert without_proof.headers.get_list("www-authenticate") == challenge(
            server, "invalid_dpop_proof", description
        )
        assert without_proof.json() == {"error": "invalid_dpop_proof", "error_description": description}

        thief = DPoPKey.generate("EC")
        other_key = raw_call(server, f"DPoP {token}", thief.proof("POST", server.url, access_token=token, nonce=nonce))
        description = "The access token is bound to another DPoP key than the proof's"
        assert other_key.status_code == 401
        assert other_key.headers.get_list("www-authenticate") == challenge(server, "invalid_token", description)
        assert other_key.json() == {"error": "invalid_token", "error_description": description}

        as_bearer = raw_call(server, f"Bearer {token}")
        description = "The access token is DPoP-bound: send it with the DPoP scheme and a proof"
        assert as_bearer.status_code == 401
        assert as_bearer.headers.get_list("www-authenticate") == challenge(server, "invalid_token", description)
        assert as_bearer.json() == {"error": "invalid_token", "error_description": description}

        no_nonce = raw_call(server, f"DPoP {token}", key.proof("POST", server.url, access_token=token))
        description = "This server requires a nonce in the DPoP proof"
        assert no_nonce.status_code == 401
        assert no_nonce.headers.get_list("www-authenticate") == challenge(server, "use_dpop_nonce", description)
        assert no_nonce.headers["dpop-nonce"]

        # With its own key and the nonce it works, once: the same proof again is a replay (one
        # connection, so one worker, whose memory saw the proof).
        proof = key.proof("POST", server.url, access_token=token, nonce=nonce)
        headers = {**request_headers("tools/list"), "Authorization": f"DPoP {token}", "DPoP": proof}
        with httpx2.Client(timeout=30) as http:
            first = http.post(server.url, headers=headers, json=request_body("tools/list"))
            again = http.post(server.url, headers=headers, json=request_body("tools/list"))
        assert first.status_code == 200, first.text
        assert again.status_code == 401
        assert again.json() == {
            "error": "invalid_dpop_proof",
            "error_description": "The DPoP proof was already used (jti)",
        }

    @pytest.mark.anyio
    async def test_client_credentials_with_dpop(self, nonce_server: DevServer) -> None:
        server = nonce_server
        async with httpx2.AsyncClient() as http:
            registered = await http.post(
                server.issuer + "/register",
                json={
                    "client_name": "nightly DPoP job",
                    "grant_types": ["client_credentials"],
                    "token_endpoint_auth_method": "client_secret_basic",
                    "scope": "todo:read",
                },
            )
        credentials = registered.json()
        key = DPoPKey.generate("OKP")
        auth = DPoPClientCredentialsProvider(
            server.url,
            MemoryTokenStorage(),
            credentials["client_id"],
            credentials["client_secret"],
            scope="todo:read",
            issuer=server.issuer,
            dpop_key=key,
        )
        async with sdk_client(server, auth) as client:
            whoami = json_of(await client.call_tool("whoami", {}))
        assert whoami["sub"] == credentials["client_id"]
        assert auth.token_types == ["DPoP"]
        (token,) = auth.bound_tokens
        assert claims_of(token)["cnf"] == {"jkt": key.jkt}

    @pytest.mark.anyio
    async def test_the_same_client_against_make_run(self, flask_run_server: DevServer) -> None:
        key, storage, recorder = DPoPKey.generate("EC"), MemoryTokenStorage(), Recorder()
        auth = dpop_provider(flask_run_server, ConsentBrowser("dpop-dave"), storage, key)
        async with sdk_client(flask_run_server, auth, recorder) as client:
            whoami = json_of(await client.call_tool("whoami", {}))
            added = await client.call_tool("list_todos", {})
        assert whoami["sub"] == "dpop-dave"
        assert added.structured_content == {"todos": []}
        assert auth.token_types == ["DPoP"]
        assert claims_of(storage.history[0].access_token)["cnf"] == {"jkt": key.jkt}
        assert recorder.exchanges[:6] == [
            ("POST", "/mcp", 401),
            ("GET", "/.well-known/oauth-protected-resource/mcp", 200),
            ("GET", "/.well-known/oauth-authorization-server/dev-issuer", 200),
            ("POST", "/dev-issuer/register", 201),
            ("POST", "/dev-issuer/token", 200),
            ("POST", "/mcp", 200),
        ]
        assert auth.proofs.count(("POST", flask_run_server.url)) == recorder.exchanges.count(("POST", "/mcp", 200))

    @pytest.mark.anyio
    async def test_refreshes_with_the_bound_refresh_token(self, dev_server: DevServer) -> None:
        key, browser, storage = DPoPKey.generate("RSA"), ConsentBrowser("dpop-carol"), MemoryTokenStorage()
        auth = dpop_provider(dev_server, browser, storage, key)
        async with sdk_client(dev_server, auth) as client:
            first = json_of(await client.call_tool("whoami", {}))
            await asyncio.sleep(4)  # the access token lives 3 s here
            second = json_of(await client.call_tool("whoami", {}))

        assert len(browser.authorization_urls) == 1, "a refresh, not a second sign-in"
        assert (first["sub"], second["sub"]) == ("dpop-carol", "dpop-carol")
        assert second["expires_at"] > first["expires_at"]
        assert len(auth.token_types) >= 2 and set(auth.token_types) == {"DPoP"}
        assert all(claims_of(t.access_token)["cnf"] == {"jkt": key.jkt} for t in storage.history)
        assert storage.client_info is not None
        database = dev_server.instance_path / "dev-issuer.sqlite3"
        with closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
            bindings = db.execute(
                "SELECT jkt, used_at IS NOT NULL FROM refresh_tokens WHERE client_id = ? ORDER BY rowid",
                (storage.client_info.client_id,),
            ).fetchall()
        # Every refresh token of this public client bound to its key; all but the last spent by a rotation.
        assert bindings == [(key.jkt, 1)] * (len(bindings) - 1) + [(key.jkt, 0)]
