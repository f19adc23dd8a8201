"""The development authorization server under gunicorn, driven by the official SDK's OAuth clients.

Sign-in as an MCP client does it (401, RFC 9728 and RFC 8414 discovery,
RFC 7591 registration, authorization with PKCE, the consent form, token),
then tool calls, a step-up on 403 and a refresh after expiry; the client
credentials grant; and every refusal the RFCs define, each leaving nothing
issued.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from collections.abc import Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.client.auth import OAuthClientProvider
from mcp.client.auth.extensions.client_credentials import ClientCredentialsOAuthProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import OAuthClientMetadata
from pydantic import AnyUrl

from tests.e2e.conftest import DevServer
from tests.support.mcp_client import json_of
from tests.support.oauth import ConsentBrowser
from tests.support.oauth import IssuedRecords
from tests.support.oauth import MemoryTokenStorage
from tests.support.oauth import authorization_url
from tests.support.oauth import consent
from tests.support.oauth import pkce
from tests.support.oauth import query_of
from tests.support.token_scan import find_tokens

pytestmark = [pytest.mark.e2e]
REDIRECT_URI = "http://127.0.0.1:8765/callback"


class Recorder:
    """Every request the SDK client's httpx client sends (its OAuth sub-requests included)."""

    def __init__(self) -> None:
        self.exchanges: list[tuple[str, str, int]] = []

    async def __call__(self, response: httpx2.Response) -> None:
        self.exchanges.append((response.request.method, response.request.url.path, response.status_code))


@asynccontextmanager
async def sdk_client(server: DevServer, auth: httpx2.Auth, recorder: Recorder | None = None) -> AsyncIterator[Client]:
    hooks: dict[str, list[Any]] = {"response": [recorder]} if recorder else {}
    async with (
        httpx2.AsyncClient(auth=auth, timeout=httpx2.Timeout(30, read=60), event_hooks=hooks) as http,
        Client(streamable_http_client(server.url, http_client=http)) as client,
    ):
        yield client


def provider(server: DevServer, browser: ConsentBrowser, storage: MemoryTokenStorage) -> OAuthClientProvider:
    metadata = OAuthClientMetadata(
        redirect_uris=[AnyUrl(REDIRECT_URI)],
        client_name="SDK test client",
        grant_types=["authorization_code", "refresh_token"],
        token_endpoint_auth_method="none",
    )
    return OAuthClientProvider(
        server.url, metadata, storage, redirect_handler=browser.open, callback_handler=browser.callback
    )


class TestSDKClient:
    @pytest.mark.anyio
    async def test_signs_in_from_a_401_and_calls_tools(self, dev_server: DevServer) -> None:
        browser, storage, recorder = ConsentBrowser("alice"), MemoryTokenStorage(), Recorder()
        async with sdk_client(dev_server, provider(dev_server, browser, storage), recorder) as client:
            whoami = json_of(await client.call_tool("whoami", {}))
            listed = await client.call_tool("list_todos", {})

        assert storage.client_info is not None
        client_id = storage.client_info.client_id
        assert storage.client_info.client_secret is None
        assert whoami["sub"] == "alice"
        assert whoami["client_id"] == client_id
        assert whoami["scopes"] == ["todo:read"]
        assert whoami["issuer"] == dev_server.issuer
        assert listed.structured_content == {"todos": []}

        # The whole dance, in order: refused, discovery, registration, token, the retried call.
        sign_in = recorder.exchanges[: recorder.exchanges.index(("POST", "/dev-issuer/token", 200)) + 2]
        assert sign_in == [
            ("POST", "/mcp", 401),
            ("GET", "/.well-known/oauth-protected-resource/mcp", 200),
            ("GET", "/.well-known/oauth-authorization-server/dev-issuer", 200),
            ("POST", "/dev-issuer/register", 201),
            ("POST", "/dev-issuer/token", 200),
            ("POST", "/mcp", 200),
        ]
        (url,) = browser.authorization_urls
        params = query_of(url)
        assert url.startswith(dev_server.issuer + "/authorize?")
        assert (params["client_id"], params["redirect_uri"], params["scope"]) == (client_id, REDIRECT_URI, "todo:read")
        assert (params["code_challenge_method"], params["resource"]) == ("S256", dev_server.url)
        (redirect,) = browser.redirects
        assert redirect.startswith(REDIRECT_URI + "?code=")
        answer = query_of(redirect)
        assert (answer["state"], answer["iss"]) == (params["state"], dev_server.issuer)

        token = storage.history[0]  # (a slow machine may have refreshed it since: it lives 3 s)
        assert (token.token_type, token.scope, token.expires_in) == ("Bearer", "todo:read", 3)
        assert token.refresh_token
        assert IssuedRecords(dev_server.instance_path).codes(client_id) == [("alice", "todo:read", 1)]

    @pytest.mark.anyio
    async def test_steps_up_on_403_and_the_call_succeeds(self, dev_server: DevServer) -> None:
        browser, storage, recorder = ConsentBrowser("bob"), MemoryTokenStorage(), Recorder()
        async with sdk_client(dev_server, provider(dev_server, browser, storage), recorder) as client:
            assert json_of(await client.call_tool("whoami", {}))["scopes"] == ["todo:read"]
            added = await client.call_tool("add_todo", {"title": "after step-up"})
            whoami = json_of(await client.call_tool("whoami", {}))
            listed = await client.call_tool("list_todos", {})

        assert added.structured_content["title"] == "after step-up"
        assert whoami["sub"] == "bob"
        assert whoami["scopes"] == ["todo:read", "todo:write"]
        assert [t["title"] for t in listed.structured_content["todos"]] == ["after step-up"]
        # The refused call never reached the tool: one 403, then a second consent for the union of scopes.
        assert recorder.exchanges.count(("POST", "/mcp", 403)) == 1
        assert [query_of(url)["scope"] for url in browser.authorization_urls] == ["todo:read", "todo:read todo:write"]
        scopes = [token.scope for token in storage.history]
        assert list(dict.fromkeys(scopes)) == ["todo:read", "todo:read todo:write"]  # refreshes keep the scope

    @pytest.mark.anyio
    async def test_refreshes_an_expired_token_with_rotation(self, dev_server: DevServer) -> None:
        browser, storage, recorder = ConsentBrowser("carol"), MemoryTokenStorage(), Recorder()
        async with sdk_client(dev_server, provider(dev_server, browser, storage), recorder) as client:
            first = json_of(await client.call_tool("whoami", {}))
            await asyncio.sleep(4)  # the access token lives 3 s
            second = json_of(await client.call_tool("whoami", {}))

        assert len(browser.authorization_urls) == 1, "a refresh, not a second sign-in"
        tokens = storage.history
        assert len(tokens) >= 2
        assert len({token.access_token for token in tokens}) == len(tokens)
        assert len({token.refresh_token for token in tokens}) == len(tokens)  # rotated every time
        assert (first["sub"], second["sub"]) == ("carol", "carol")
        assert second["expires_at"] > first["expires_at"]
        assert ("POST", "/mcp", 401) not in recorder.exchanges[recorder.exchanges.index(("POST", "/mcp", 200)) :]
        assert storage.client_info is not None
        spent = [("carol", "todo:read", 1, 0)] * (len(tokens) - 1)
        records = IssuedRecords(dev_server.instance_path).refresh_tokens(storage.client_info.client_id)
        assert records == [*spent, ("carol", "todo:read", 0, 0)]

    @pytest.mark.anyio
    async def test_client_credentials_for_a_registered_confidential_client(self, dev_server: DevServer) -> None:
        async with httpx2.AsyncClient() as http:
            registered = await http.post(
                dev_server.issuer + "/register",
                json={
                    "client_name": "nightly job",
                    "grant_types": ["client_credentials"],
                    "token_endpoint_auth_method": "client_secret_basic",
                    "scope": "todo:read todo:write",
                },
            )
        assert registered.status_code == 201
        credentials = registered.json()
        auth = ClientCredentialsOAuthProvider(
            dev_server.url,
            MemoryTokenStorage(),
            credentials["client_id"],
            credentials["client_secret"],
            scope="todo:read",
            issuer=dev_server.issuer,
        )
        async with sdk_client(dev_server, auth) as client:
            whoami = json_of(await client.call_tool("whoami", {}))
        assert whoami["sub"] == whoami["client_id"] == credentials["client_id"]
        assert whoami["scopes"] == ["todo:read"]
        assert IssuedRecords(dev_server.instance_path).refresh_tokens(credentials["client_id"]) == []


@pytest.fixture
def http() -> Iterator[httpx2.Client]:
    with httpx2.Client(timeout=30) as client:
        yield client


@pytest.fixture
def public_client(dev_server: DevServer, http: httpx2.Client) -> str:
    response = http.post(
        dev_server.issuer + "/register",
        json={
            "client_name": "negative tests",
            "redirect_uris": [REDIRECT_URI],
            "grant_types": ["authorization_code", "refresh_token"],
            "token_endpoint_auth_method": "none",
        },
    )
    assert response.status_code == 201, response.text
    assert "client_secret" not in response.json()
    return str(response.json()["client_id"])


@pytest.fixture
def allowed_client(dev_server: DevServer, http: httpx2.Client, public_client: str) -> str:
    """A client a user has allowed once (one unused code issued): its errors may go back to its redirect URI."""
    sign_in(dev_server, http, public_client)
    return public_client


def authorize(dev_server: DevServer, client_id: str, challenge: str | None, **extra: str) -> str:
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": REDIRECT_URI,
        "scope": "todo:read",
        "state": "xyz",
        "resource": dev_server.url,
        **({"code_challenge": challenge, "code_challenge_method": "S256"} if challenge else {}),
        **extra,
    }
    return authorization_url(dev_server.base, **{k: v for k, v in params.items() if v != ""})


def error_redirect(answer: httpx2.Response, error: str, description: str, server: DevServer) -> None:
    assert answer.status_code == 302, answer.text
    location = answer.headers["location"]
    assert location.startswith(REDIRECT_URI + "?")
    assert query_of(location) == {
        "error": error,
        "error_description": description,
        "state": "xyz",
        "iss": server.issuer,
    }


def sign_in(dev_server: DevServer, http: httpx2.Client, client_id: str) -> tuple[str, str]:
    """A code and its verifier, through the consent form."""
    verifier, challenge = pkce()
    _, answer = consent(http, authorize(dev_server, client_id, challenge))
    assert answer is not None and answer.status_code == 302, answer
    return query_of(answer.headers["location"])["code"], verifier


def redeem(dev_server: DevServer, http: httpx2.Client, client_id: str, code: str, verifier: str, **extra: str):  # type: ignore[no-untyped-def]
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT_URI,
        "client_id": client_id,
        "code_verifier": verifier,
        "resource": dev_server.url,
        **extra,
    }
    return http.post(dev_server.issuer + "/token", data=data)


def oauth_error(response: httpx2.Response, status: int, error: str, description: str | None = None) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["error"] == error, body
    if description is not None:
        assert body.get("error_description") == description, body


class TestRefusals:
    @pytest.mark.parametrize(
        ("extra", "description"),
        [
            pytest.param(
                {},
                "PKCE is required: send code_challenge with code_challenge_method=S256",
                id="no code_challenge",
            ),
            pytest.param(
                {"code_challenge": "x" * 43, "code_challenge_method": "plain"},
                "code_challenge_method must be S256",
                id="plain",
            ),
            pytest.param(
                {"code_challenge": "x" * 43}, "code_challenge_method must be S256", id="no method means plain"
            ),
        ],
    )
    def test_pkce_missing_or_plain(
        self, dev_server: DevServer, http: httpx2.Client, allowed_client: str, extra: dict[str, str], description: str
    ) -> None:
        before = IssuedRecords(dev_server.instance_path).codes(allowed_client)
        page = http.get(authorize(dev_server, allowed_client, None, **extra))
        error_redirect(page, "invalid_request", description, dev_server)
        assert IssuedRecords(dev_server.instance_path).codes(allowed_client) == before

    def test_wrong_verifier(self, dev_server: DevServer, http: httpx2.Client, public_client: str) -> None:
        code, _ = sign_in(dev_server, http, public_client)
        other_verifier, _ = pkce()
        oauth_error(
            redeem(dev_server, http, public_client, code, other_verifier),
            400,
            "invalid_grant",
            "Code challenge failed.",
        )
        records = IssuedRecords(dev_server.instance_path)
        assert records.codes(public_client) == [("alice", "todo:read", 0)]
        assert records.refresh_tokens(public_client) == []

    def test_code_reuse_is_refused_and_revokes_what_it_issued(
        self, dev_server: DevServer, http: httpx2.Client, public_client: str
    ) -> None:
        code, verifier = sign_in(dev_server, http, public_client)
        first = redeem(dev_server, http, public_client, code, verifier)
        assert first.status_code == 200, first.text
        oauth_error(redeem(dev_server, http, public_client, code, verifier), 400, "invalid_grant")
        # The refresh token the first redemption issued is now dead.
        refreshed = http.post(
            dev_server.issuer + "/token",
            data={
                "grant_type": "refresh_token",
                "refresh_token": first.json()["refresh_token"],
                "client_id": public_client,
            },
        )
        oauth_error(refreshed, 400, "invalid_grant")
        assert IssuedRecords(dev_server.instance_path).refresh_tokens(public_client) == [("alice", "todo:read", 0, 1)]

    def test_redirect_uri_mismatch_is_never_redirected_to(
        self, dev_server: DevServer, http: httpx2.Client, public_client: str
    ) -> None:
        _, challenge = pkce()
        for other in ("http://127.0.0.1:8765/elsewhere", "https://attacker.example/callback"):
            page = http.get(authorize(dev_server, public_client, challenge, redirect_uri=other))
            assert page.status_code == 400
            assert "location" not in page.headers
            assert page.headers["content-type"] == "text/html; charset=utf-8"
            assert f"invalid_request</code>: Redirect URI {other} is not supported by client." in page.text
        assert IssuedRecords(dev_server.instance_path).codes(public_client) == []

    def test_a_loopback_redirect_may_use_any_port(
        self, dev_server: DevServer, http: httpx2.Client, public_client: str
    ) -> None:
        _, challenge = pkce()
        _, answer = consent(
            http, authorize(dev_server, public_client, challenge, redirect_uri=REDIRECT_URI.replace("8765", "9999"))
        )
        assert answer is not None and answer.headers["location"].startswith("http://127.0.0.1:9999/callback?code=")

    def test_foreign_resource(self, dev_server: DevServer, http: httpx2.Client, allowed_client: str) -> None:
        _, challenge = pkce()
        description = f"This authorization server only issues tokens for {dev_server.url}"
        page = http.get(authorize(dev_server, allowed_client, challenge, resource="https://other.example/mcp"))
        error_redirect(page, "invalid_target", description, dev_server)
        unused = ("alice", "todo:read", 0)
        assert IssuedRecords(dev_server.instance_path).codes(allowed_client) == [unused]  # the fixture's sign-in

        code, verifier = sign_in(dev_server, http, allowed_client)
        answer = redeem(dev_server, http, allowed_client, code, verifier, resource="https://other.example/mcp")
        oauth_error(answer, 400, "invalid_target", description)
        assert IssuedRecords(dev_server.instance_path).codes(allowed_client) == [unused, unused]
        assert IssuedRecords(dev_server.instance_path).refresh_tokens(allowed_client) == []

    def test_a_client_nobody_allowed_gets_an_error_page_never_a_redirect(
        self, dev_server: DevServer, http: httpx2.Client, public_client: str
    ) -> None:
        """RFC 9700 section 4.11.2: registration is open, so an error redirect before any consent would make this
        server an open redirector for whatever URI the registrant chose."""
        page = http.get(authorize(dev_server, public_client, None))
        assert page.status_code == 400
        assert "location" not in page.headers
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        assert "<code>invalid_request</code>: PKCE is required" in page.text

    def test_refresh_token_reuse_revokes_the_family(
        self, dev_server: DevServer, http: httpx2.Client, public_client: str
    ) -> None:
        code, verifier = sign_in(dev_server, http, public_client)
        first = redeem(dev_server, http, public_client, code, verifier).json()["refresh_token"]

        def refresh(token: str) -> httpx2.Response:
            data = {"grant_type": "refresh_token", "refresh_token": token, "client_id": public_client}
            return http.post(dev_server.issuer + "/token", data=data)

        rotated = refresh(first)
        assert rotated.status_code == 200, rotated.text
        second = rotated.json()["refresh_token"]
        oauth_error(refresh(first), 400, "invalid_grant")
        oauth_error(refresh(second), 400, "invalid_grant")  # the whole family went with it
        assert IssuedRecords(dev_server.instance_path).refresh_tokens(public_client) == [
            ("alice", "todo:read", 1, 1),
            ("alice", "todo:read", 0, 1),
        ]

    def test_denied_consent(self, dev_server: DevServer, http: httpx2.Client, public_client: str) -> None:
        _, challenge = pkce()
        _, answer = consent(http, authorize(dev_server, public_client, challenge), decision="deny")
        assert answer is not None
        error_redirect(
            answer, "access_denied", "The resource owner or authorization server denied the request", dev_server
        )
        assert IssuedRecords(dev_server.instance_path).codes(public_client) == []

    def test_a_form_without_the_consent_cookie_is_refused(
        self, dev_server: DevServer, http: httpx2.Client, public_client: str
    ) -> None:
        _, challenge = pkce()
        url = authorize(dev_server, public_client, challenge)
        page = http.get(url)
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert token is not None
        with httpx2.Client() as other_browser:
            forged = other_browser.post(url, data={"csrf_token": token[1], "username": "mallory", "decision": "allow"})
        assert forged.status_code == 403
        assert "location" not in forged.headers
        assert "This consent form expired or did not come from this page." in forged.text
        assert IssuedRecords(dev_server.instance_path).codes(public_client) == []


def test_tokens_never_reach_the_log(dev_server: DevServer) -> None:
    log = dev_server.process.log()
    assert "issued an access token and a refresh token for authorization_code" in log
    assert find_tokens(log) == []
    assert "code=" not in log and "refresh_token=" not in log
