"""Development mode: its own key and JWK Set, and tokens from the CLI that the server accepts."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from flask import Flask

from app import create_app
from app.settings import Settings
from tests.support.jsonrpc import call_tool
from tests.support.jsonrpc import result_of


def test_cli_token_is_accepted_by_the_server(dev_app: Flask) -> None:
    result = dev_app.test_cli_runner().invoke(
        args=["mcp", "token", "--sub", "alice", "--scope", "todo:read todo:write"]
    )
    assert result.exit_code == 0, result.output
    token = result.output.strip()
    headers, body = call_tool("whoami", token=token)
    response = dev_app.test_client().post("/mcp", headers={**headers, "Host": "127.0.0.1:5000"}, data=body)
    assert response.status_code == 200
    whoami = json.loads(result_of(response.content_type, response.get_data())["result"]["content"][0]["text"])
    assert whoami["sub"] == "alice"
    assert whoami["scopes"] == ["todo:read", "todo:write"]
    assert whoami["issuer"] == "http://127.0.0.1:5000/dev-issuer"
    assert whoami["client_id"] == "dev-cli"


def test_cli_token_refused_outside_development_mode(app: Flask) -> None:
    result = app.test_cli_runner().invoke(args=["mcp", "token"])
    assert result.exit_code == 1
    assert result.output == (
        "Error: tokens can only be minted in development mode (MCP_DEV=1); "
        "in production your authorization server issues them\n"
    )


def test_the_key_is_created_private_and_shared(tmp_path: Path) -> None:
    settings = Settings.from_mapping({"MCP_DEV": "1", "MCP_INSTANCE_PATH": str(tmp_path / "fresh")})
    first, again = create_app(settings), create_app(settings)
    try:
        key_file = tmp_path / "fresh" / "dev-issuer-key.json"
        assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
        assert again.extensions["dev_issuer"].jwks() == first.extensions["dev_issuer"].jwks()
        assert "d" not in first.extensions["dev_issuer"].jwks()["keys"][0]
    finally:
        for app in (first, again):
            app.extensions["mcp_bridge"].loops.close()


def test_jwks(dev_app: Flask) -> None:
    keys = dev_app.test_client().get("/dev-issuer/jwks.json").get_json()["keys"]
    assert [(k["kty"], k["use"], k["alg"]) for k in keys] == [("RSA", "sig", "RS256")]


def test_nothing_of_it_exists_outside_development_mode(app: Flask) -> None:
    assert app.test_client().get("/dev-issuer/jwks.json").status_code == 401
    assert "dev_issuer" not in app.extensions
