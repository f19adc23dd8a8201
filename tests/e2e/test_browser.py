"""The consent page and the landing page in a real browser: Debian's chromium, driven by Playwright.

Playwright's own browser download cannot work here, so it launches the system
chromium (`make test` installs the Debian package). The client's redirect URI
is a tiny HTTP server on loopback that records what the browser brings back.
Screenshots land in each test's temporary folder.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx2
import pytest
from playwright.sync_api import Browser
from playwright.sync_api import sync_playwright

from tests.e2e.conftest import DevServer
from tests.support.oauth import authorization_url
from tests.support.oauth import pkce
from tests.support.oauth import query_of

pytestmark = [pytest.mark.e2e]
CHROMIUM = "/usr/bin/chromium"
# Without these, chromium reaches for the network (closed here) and stalls.
CHROMIUM_ARGS = [
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


class CallbackServer:
    """The client's redirect URI: answers a small page and remembers each visit (not the browser's favicon probe)."""

    def __init__(self) -> None:
        paths: list[str] = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if not self.path.startswith("/callback"):
                    self.send_error(404)
                    return
                paths.append(self.path)
                body = b"<!doctype html><title>Client</title><h1>Signed in to the test client</h1>"
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.paths = paths
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.redirect_uri = f"http://127.0.0.1:{self.httpd.server_address[1]}/callback"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(10)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: `make test` installs Debian's chromium package"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, chromium_sandbox=False, args=CHROMIUM_ARGS, timeout=60_000
        )
        yield launched
        launched.close()


@pytest.fixture
def callback() -> Iterator[CallbackServer]:
    server = CallbackServer()
    yield server
    server.close()


def register(dev_server: DevServer, redirect_uri: str) -> str:
    response = httpx2.post(
        dev_server.issuer + "/register",
        json={
            "client_name": "Browser test client",
            "redirect_uris": [redirect_uri],
            "grant_types": ["authorization_code", "refresh_token"],
            "token_endpoint_auth_method": "none",
        },
        timeout=30,
    )
    assert response.status_code == 201, response.text
    return str(response.json()["client_id"])


def test_consent_in_a_browser_returns_a_code_to_the_client(
    dev_server: DevServer, browser: Browser, callback: CallbackServer, tmp_path: Path
) -> None:
    client_id = register(dev_server, callback.redirect_uri)
    verifier, challenge = pkce()
    url = authorization_url(
        dev_server.base,
        response_type="code",
        client_id=client_id,
        redirect_uri=callback.redirect_uri,
        scope="todo:read todo:write",
        state="browser-state",
        code_challenge=challenge,
        code_challenge_method="S256",
        resource=dev_server.url,
    )
    page = browser.new_page()
    try:
        page.goto(url)
        text = page.inner_text("main")
        assert "Allow Browser test client to use Flask MCP server?" in text
        assert f"asks to use the MCP server at {dev_server.url} on your behalf" in text
        assert f"you go back to {callback.redirect_uri.split('/')[2]}" in text
        assert "todo:read: See the todos on your list" in text
        assert "todo:write: Add todos to your list (and see them)" in text
        page.fill("#username", "dana")
        page.screenshot(path=str(tmp_path / "consent.png"), full_page=True)

        page.click("button.allow")
        page.wait_for_url(callback.redirect_uri + "?*", timeout=30_000)
        assert page.inner_text("h1") == "Signed in to the test client"
        page.screenshot(path=str(tmp_path / "redirected.png"))
    finally:
        page.close()

    (path,) = callback.paths
    params = query_of(path)
    assert (params["state"], params["iss"]) == ("browser-state", dev_server.issuer)
    token = httpx2.post(
        dev_server.issuer + "/token",
        data={
            "grant_type": "authorization_code",
            "code": params["code"],
            "redirect_uri": callback.redirect_uri,
            "client_id": client_id,
            "code_verifier": verifier,
            "resource": dev_server.url,
        },
        timeout=30,
    )
    assert token.status_code == 200, token.text
    assert token.json()["scope"] == "todo:read todo:write"
    assert (tmp_path / "consent.png").stat().st_size > 10_000


def test_deny_in_a_browser_returns_access_denied(
    dev_server: DevServer, browser: Browser, callback: CallbackServer
) -> None:
    client_id = register(dev_server, callback.redirect_uri)
    _, challenge = pkce()
    url = authorization_url(
        dev_server.base,
        response_type="code",
        client_id=client_id,
        redirect_uri=callback.redirect_uri,
        scope="todo:read",
        state="denied-state",
        code_challenge=challenge,
        code_challenge_method="S256",
    )
    page = browser.new_page()
    try:
        page.goto(url)
        page.click("text=Deny")  # the user name is not needed to say no
        page.wait_for_url(callback.redirect_uri + "?*", timeout=30_000)
    finally:
        page.close()
    (path,) = callback.paths
    assert query_of(path) == {
        "error": "access_denied",
        "error_description": "The resource owner or authorization server denied the request",
        "state": "denied-state",
        "iss": dev_server.issuer,
    }


def test_landing_page(dev_server: DevServer, browser: Browser, tmp_path: Path) -> None:
    page = browser.new_page()
    try:
        response = page.goto(dev_server.base + "/")
        assert response is not None and response.status == 200
        text = page.inner_text("main")
        page.screenshot(path=str(tmp_path / "landing.png"), full_page=True)
        rows = [row.inner_text().split("\t") for row in page.query_selector_all("tbody tr")]
        links = {link.inner_text(): link.get_attribute("href") for link in page.query_selector_all("main ul a")}
    finally:
        page.close()
    assert "Development mode (MCP_DEV=1)" in text
    assert f"Connect an MCP client to {dev_server.url}" in text
    assert f"claude mcp add --transport http flask-mcp-server {dev_server.url}" in text
    assert "npx @modelcontextprotocol/inspector" in text
    # A token for this very server (its resource URL names the port), with the scopes it advertises.
    token_command = f"MCP_DEV=1 MCP_RESOURCE_URL={dev_server.url} .venv/bin/flask --app wsgi mcp token --sub alice"
    assert token_command + " --scope todo:read" in text
    assert [(row[0], row[2]) for row in rows] == [
        ("whoami", "none"),
        ("greet_user", "none"),
        ("list_todos", "todo:read"),
        ("add_todo", "todo:write"),
        ("delete_todo", "todo:delete"),
        ("count_to", "none"),
    ]
    assert links == {
        "Protected resource metadata (RFC 9728)": dev_server.base + "/.well-known/oauth-protected-resource/mcp",
        "Authorization server metadata (RFC 8414)": (
            dev_server.base + "/.well-known/oauth-authorization-server/dev-issuer"
        ),
        "Signing keys (JWK Set)": dev_server.base + "/dev-issuer/jwks.json",
    }
