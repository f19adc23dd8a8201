"""The before_request hook end to end through Flask: who gets in, and the exact challenge otherwise."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.conftest import Tokens
from tests.support.dpop import DEFAULT_ALGS
from tests.support.issuer import MockIssuer
from tests.support.jsonrpc import HANDSHAKE
from tests.support.jsonrpc import MODERN
from tests.support.jsonrpc import call_tool
from tests.support.jsonrpc import request_body
from tests.support.jsonrpc import request_headers
from tests.support.jsonrpc import result_of

ROOT = Path(__file__).resolve().parents[2]
METADATA = "http://localhost/.well-known/oauth-protected-resource/mcp"
LIST_TOOLS = json.dumps(request_body("tools/list"))


def challenges(error: str, scope: str = "todo:read todo:write") -> list[str]:
    """The two challenges of MCP_DPOP=allowed (the default): Bearer, then DPoP with its algs; ``error``
    is the error and error_description params with their trailing comma, or empty."""
    tail = f'scope="{scope}", resource_metadata="{METADATA}"'
    return [f"Bearer {error}{tail}", f"DPoP {error}{DEFAULT_ALGS}, {tail}"]


def post(client: FlaskClient, headers: dict[str, str], body: bytes | str = LIST_TOOLS):  # type: ignore[no-untyped-def]
    response = client.post("/mcp", headers=headers, data=body)
    response.close()
    return response


class TestNoToken:
    def test_challenge_has_no_error_and_names_metadata_and_scopes(self, client: FlaskClient) -> None:
        response = post(client, request_headers("tools/list"))
        assert response.status_code == 401
        assert response.headers.getlist("WWW-Authenticate") == [
            f'Bearer scope="todo:read todo:write", resource_metadata="{METADATA}"',
            f'DPoP {DEFAULT_ALGS}, scope="todo:read todo:write", resource_metadata="{METADATA}"',
        ]
        assert response.headers["Content-Type"] == "application/json"
        assert response.headers["Cache-Control"] == "no-store"
        assert response.get_json() == {"error": "unauthorized", "error_description": "An access token is required"}

    def test_query_string_and_form_tokens_are_never_read(self, client: FlaskClient, tokens: Tokens) -> None:
        token = tokens.mint()
        response = client.post(f"/mcp?access_token={token}", headers=request_headers("tools/list"), data=LIST_TOOLS)
        assert response.status_code == 401
        form = client.post("/mcp", data={"access_token": token})
        assert form.status_code == 401
        assert "error=" not in form.headers["WWW-Authenticate"]

    def test_challenge_url_ignores_the_host_header(self, app: Flask) -> None:
        # Host is checked on the MCP endpoint; any other protected path still answers with our URL.
        response = app.test_client().get("/anything", headers={"Host": "evil.example"})
        assert response.status_code == 401
        assert f'resource_metadata="{METADATA}"' in response.headers["WWW-Authenticate"]

    def test_unknown_paths_are_protected_too(self, client: FlaskClient) -> None:
        assert client.get("/admin").status_code == 401


class TestMalformedHeader:
    @pytest.mark.parametrize(
        ("header", "description"),
        [
            pytest.param("Bearer", "The Authorization header carries no token", id="no token"),
            pytest.param("Bearer   ", "The Authorization header carries no token", id="only spaces"),
            pytest.param(
                "Basic dXNlcjpwYXNz", "The Authorization header must use the Bearer or DPoP scheme", id="basic"
            ),
            pytest.param("Bearer a b", "The Authorization header must carry exactly one bearer token", id="space"),
            pytest.param(
                "Bearer a.b.c, Bearer d.e.f",
                "The Authorization header must carry exactly one bearer token",
                id="two tokens",
            ),
        ],
    )
    def test_is_400_invalid_request(self, client: FlaskClient, header: str, description: str) -> None:
        response = post(client, {**request_headers("tools/list"), "Authorization": header})
        assert response.status_code == 400
        assert response.headers.getlist("WWW-Authenticate") == challenges(
            f'error="invalid_request", error_description="{description}", '
        )
        assert response.get_json() == {"error": "invalid_request", "error_description": description}


class TestInvalidToken:
    @pytest.mark.parametrize(
        ("claims", "description"),
        [
            pytest.param({"exp": 1_000_000}, "The access token expired", id="expired"),
            pytest.param(
                {"aud": "http://localhost/other"}, "The access token was not issued for this resource", id="aud"
            ),
            pytest.param({"iss": "https://evil.example"}, "The access token was issued by another issuer", id="iss"),
            pytest.param({"sub": None}, "The access token lacks the sub claim", id="no sub"),
        ],
    )
    def test_is_401_invalid_token(
        self, client: FlaskClient, tokens: Tokens, claims: dict[str, object], description: str
    ) -> None:
        response = post(client, request_headers("tools/list", token=tokens.mint(**claims)))
        assert response.status_code == 401
        assert response.headers.getlist("WWW-Authenticate") == challenges(
            f'error="invalid_token", error_description="{description}", '
        )
        assert response.get_json() == {"error": "invalid_token", "error_description": description}

    def test_token_never_echoed(self, client: FlaskClient, tokens: Tokens) -> None:
        token = tokens.mint(exp=1_000_000)
        response = post(client, request_headers("tools/list", token=token))
        assert token not in response.get_data(as_text=True)
        assert all(token not in value for _, value in response.headers)


class TestInsufficientScope:
    @pytest.mark.parametrize("era", [MODERN, HANDSHAKE])
    def test_tools_call_without_the_scope_is_403_before_the_sdk(
        self, client: FlaskClient, tokens: Tokens, era: str
    ) -> None:
        headers, body = call_tool("add_todo", {"title": "x"}, era=era, token=tokens.mint("todo:read"))
        response = post(client, headers, body)
        assert response.status_code == 403
        assert response.headers.getlist("WWW-Authenticate") == challenges(
            'error="insufficient_scope", error_description="This call requires the scopes: todo:write", ',
            "todo:write",
        )
        assert response.get_json() == {
            "error": "insufficient_scope",
            "error_description": "This call requires the scopes: todo:write",
        }

    def test_a_broader_scope_implies_the_narrower_one(self, client: FlaskClient, tokens: Tokens) -> None:
        headers, body = call_tool("list_todos", token=tokens.mint("todo:write"))
        response = client.post("/mcp", headers=headers, data=body)
        assert response.status_code == 200
        assert result_of(response.content_type, response.get_data())["result"]["structuredContent"] == {"todos": []}

    def test_the_body_decides_not_the_mcp_name_header(self, client: FlaskClient, tokens: Tokens) -> None:
        headers, body = call_tool("delete_todo", {"id": 1}, era=HANDSHAKE, token=tokens.mint("todo:read"))
        response = post(client, {**headers, "Mcp-Name": "list_todos"}, body)
        assert response.status_code == 403
        assert 'scope="todo:delete"' in response.headers["WWW-Authenticate"]

    def test_every_call_in_a_batch_is_checked(self, client: FlaskClient, tokens: Tokens) -> None:
        batch = [
            request_body("tools/call", {"name": "list_todos", "arguments": {}}, era=HANDSHAKE, id=1),
            request_body("tools/call", {"name": "delete_todo", "arguments": {"id": 1}}, era=HANDSHAKE, id=2),
            request_body("tools/call", {"name": "add_todo", "arguments": {"title": "x"}}, era=HANDSHAKE, id=3),
        ]
        headers = request_headers("tools/call", era=HANDSHAKE, token=tokens.mint("todo:read"))
        response = post(client, headers, json.dumps(batch))
        assert response.status_code == 403
        # All scopes the whole message needs, in one challenge (MCP 2026-07-28).
        assert response.headers.getlist("WWW-Authenticate") == challenges(
            'error="insufficient_scope", '
            'error_description="This call requires the scopes: todo:delete todo:read todo:write", ',
            "todo:delete todo:read todo:write",
        )

    def test_tools_list_shows_every_tool_to_any_token(self, client: FlaskClient, tokens: Tokens) -> None:
        response = client.post("/mcp", headers=request_headers("tools/list", token=tokens.mint()), data=LIST_TOOLS)
        names = [tool["name"] for tool in result_of(response.content_type, response.get_data())["result"]["tools"]]
        assert names == ["whoami", "greet_user", "list_todos", "add_todo", "delete_todo", "count_to"]

    def test_an_unparseable_body_is_left_to_the_sdk(self, client: FlaskClient, tokens: Tokens) -> None:
        response = client.post("/mcp", headers=request_headers("tools/call", "x", token=tokens.mint()), data=b"{nope")
        assert response.status_code == 400
        assert response.get_json() == {
            "jsonrpc": "2.0",
            "id": None,
            "error": {"code": -32700, "message": "Parse error"},
        }


class TestKeysUnavailable:
    def test_503_with_retry_after_when_no_keys_ever_loaded(
        self, client: FlaskClient, tokens: Tokens, issuer: MockIssuer
    ) -> None:
        issuer.down = True
        try:
            response = post(client, request_headers("tools/list", token=tokens.mint()))
        finally:
            issuer.down = False
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "30"
        assert response.get_json() == {
            "error": "temporarily_unavailable",
            "error_description": "The server cannot verify access tokens right now; retry later",
        }

    def test_cached_keys_keep_working_while_the_issuer_is_down(
        self, client: FlaskClient, tokens: Tokens, issuer: MockIssuer
    ) -> None:
        assert post(client, request_headers("tools/list", token=tokens.mint())).status_code == 200
        issuer.down = True
        try:
            assert post(client, request_headers("tools/list", token=tokens.mint())).status_code == 200
        finally:
            issuer.down = False


def test_preflight_needs_no_token(client: FlaskClient) -> None:
    response = client.options(
        "/mcp",
        headers={
            "Origin": "http://localhost",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type, mcp-protocol-version",
        },
    )
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == "http://localhost"


class TestResourcesAndPrompts:
    @pytest.mark.parametrize("era", [MODERN, HANDSHAKE])
    @pytest.mark.parametrize(
        ("method", "params", "target"),
        [
            pytest.param("resources/read", {"uri": "todo://1"}, "todo://1", id="resource template"),
            pytest.param("prompts/get", {"name": "plan_my_day"}, "plan_my_day", id="prompt"),
        ],
    )
    def test_403_before_the_sdk(
        self, client: FlaskClient, tokens: Tokens, era: str, method: str, params: dict[str, str], target: str
    ) -> None:
        headers = request_headers(method, target, era=era, token=tokens.mint("todo:write:other"))
        response = post(client, headers, json.dumps(request_body(method, params, era=era)))
        assert response.status_code == 403
        assert response.headers.getlist("WWW-Authenticate") == challenges(
            'error="insufficient_scope", error_description="This call requires the scopes: todo:read", ',
            "todo:read",
        )

    @pytest.mark.parametrize("era", [MODERN, HANDSHAKE])
    def test_allowed_reads_return_the_sdks_result(self, client: FlaskClient, tokens: Tokens, era: str) -> None:
        token = tokens.mint("todo:read", "todo:write", sub=f"reader-{era}")
        headers, body = call_tool("add_todo", {"title": "read me"}, era=era, token=token)
        added = client.post("/mcp", headers=headers, data=body)
        todo = result_of(added.content_type, added.get_data())["result"]["structuredContent"]
        uri = f"todo://{todo['id']}"
        read = client.post(
            "/mcp",
            headers=request_headers("resources/read", uri, era=era, token=token),
            json=request_body("resources/read", {"uri": uri}, era=era),
        )
        contents = result_of(read.content_type, read.get_data())["result"]["contents"]
        assert contents == [
            {"uri": uri, "mimeType": "application/json", "text": json.dumps(todo, separators=(",", ":"))}
        ]
        prompt = client.post(
            "/mcp",
            headers=request_headers("prompts/get", "plan_my_day", era=era, token=token),
            json=request_body("prompts/get", {"name": "plan_my_day"}, era=era),
        )
        messages = result_of(prompt.content_type, prompt.get_data())["result"]["messages"]
        assert messages == [
            {
                "role": "user",
                "content": {
                    "type": "text",
                    "text": f"Here are my todos:\n- read me ({uri})\n\n"
                    "Order them into a realistic plan for today and say why.",
                },
            }
        ]

    def test_another_users_todo_is_not_found(self, client: FlaskClient, tokens: Tokens) -> None:
        owner = tokens.mint("todo:read", "todo:write", sub="owner")
        headers, body = call_tool("add_todo", {"title": "mine"}, token=owner)
        added = client.post("/mcp", headers=headers, data=body)
        todo_id = result_of(added.content_type, added.get_data())["result"]["structuredContent"]["id"]
        uri = f"todo://{todo_id}"
        other = tokens.mint("todo:read", sub="someone-else")
        response = client.post(
            "/mcp",
            headers=request_headers("resources/read", uri, token=other),
            json=request_body("resources/read", {"uri": uri}),
        )
        assert response.status_code == 400
        assert response.get_json() == {
            "jsonrpc": "2.0",
            "id": 1,
            "error": {"code": -32602, "message": f"no todo with id {todo_id}", "data": {"uri": uri}},
        }

    def test_lists_show_everything_to_any_token(self, client: FlaskClient, tokens: Tokens) -> None:
        token = tokens.mint()
        templates = client.post(
            "/mcp",
            headers=request_headers("resources/templates/list", token=token),
            json=request_body("resources/templates/list"),
        )
        assert [t["uriTemplate"] for t in templates.get_json()["result"]["resourceTemplates"]] == ["todo://{id}"]
        prompts = client.post(
            "/mcp", headers=request_headers("prompts/list", token=token), json=request_body("prompts/list")
        )
        assert [p["name"] for p in prompts.get_json()["result"]["prompts"]] == ["plan_my_day"]


class TestImportBoundary:
    def test_the_auth_package_loads_no_bridge_and_no_sdk_transport(self) -> None:
        """app.auth alone, in a fresh interpreter: the bridge may import auth, never the other way.

        The ``app`` package itself is stood in for by an empty one, since ``app/__init__.py`` (the factory)
        imports every part, the bridge included; what is measured is what ``app.auth`` pulls in. Importing
        any ``mcp`` module would run the SDK's package ``__init__``, which loads its whole transport.
        """
        probe = (
            "import json, sys, types\n"
            "package = types.ModuleType('app')\n"
            f"package.__path__ = [{str(ROOT / 'app')!r}]\n"
            "sys.modules['app'] = package\n"
            "import app.auth\n"
            "names = ['app.auth', 'app.bridge', 'mcp', 'mcp.server.streamable_http', 'sse_starlette', 'anyio']\n"
            "print(json.dumps({name: name in sys.modules for name in names}))\n"
        )
        result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False)
        assert (result.returncode, result.stderr) == (0, "")
        assert json.loads(result.stdout) == {
            "app.auth": True,
            "app.bridge": False,
            "mcp": False,
            "mcp.server.streamable_http": False,
            "sse_starlette": False,
            "anyio": False,
        }
