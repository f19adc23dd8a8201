"""Client ID metadata documents: a client_id that is a URL, fetched, checked, cached, shown by its host."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from http.server import ThreadingHTTPServer
from typing import Any
from urllib.parse import urlencode

import pytest
from flask.testing import FlaskClient

from app.dev_issuer.client_metadata import url_problem
from tests.dev_issuer.conftest import ISSUER
from tests.dev_issuer.conftest import ORIGIN
from tests.dev_issuer.conftest import REDIRECT_URI
from tests.support.oauth import pkce
from tests.support.oauth import query_of
from tests.support.oauth import read_form


class DocumentServer:
    """Serves whatever each test puts in ``routes``: path -> (status, headers, body)."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[int, dict[str, str], bytes]] = {}
        self.hits: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.hits.append(self.path)
                status, headers, body = outer.routes.get(self.path, (404, {}, b"not found"))
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def publish(self, path: str, document: Any, *, status: int = 200, content_type: str = "application/json") -> str:
        body = document if isinstance(document, bytes) else json.dumps(document).encode()
        self.routes[path] = (status, {"Content-Type": content_type}, body)
        return self.origin + path

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(10)


@pytest.fixture
def documents() -> Iterator[DocumentServer]:
    server = DocumentServer()
    yield server
    server.close()


def authorize(client: FlaskClient, client_id: str, challenge: str) -> Any:
    query = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": REDIRECT_URI,
        "scope": "todo:read",
        "state": "s",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    return client.get(ISSUER + "/authorize?" + urlencode(query))


def test_a_document_client_signs_in_without_registering(dev_client: FlaskClient, documents: DocumentServer) -> None:
    url = documents.origin + "/clients/inspector.json"
    documents.publish(
        "/clients/inspector.json",
        {
            "client_id": url,
            "client_name": "Inspector",
            "redirect_uris": [REDIRECT_URI],
            "grant_types": ["authorization_code", "refresh_token"],
            "token_endpoint_auth_method": "none",
        },
    )
    verifier, challenge = pkce()
    page = authorize(dev_client, url, challenge)
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    host = documents.origin.removeprefix("http://")
    assert "Allow Inspector to use Flask MCP server?" in html
    assert f"Identified by its client metadata document on <strong>{host}</strong>." in html

    form = read_form(html)
    answer = dev_client.post(ORIGIN + form.action, data={**form.fields, "username": "fay", "decision": "allow"})
    code = query_of(answer.headers["Location"])["code"]
    token = dev_client.post(
        ISSUER + "/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT_URI,
            "client_id": url,
            "code_verifier": verifier,
        },
    )
    assert token.status_code == 200, token.get_json()
    assert token.get_json()["refresh_token"]
    # Fetched once; the consent, the decision and the token request used the cached copy.
    assert documents.hits == ["/clients/inspector.json"]
    assert authorize(dev_client, url, challenge).status_code == 200
    assert documents.hits == ["/clients/inspector.json"]


def refusal_page(client: FlaskClient, client_id: str) -> str:
    _, challenge = pkce()
    page = authorize(client, client_id, challenge)
    assert page.status_code == 400
    assert "Location" not in page.headers
    return page.get_data(as_text=True)


def good(url: str, **changes: Any) -> dict[str, Any]:
    document = {"client_id": url, "client_name": "Doc", "redirect_uris": [REDIRECT_URI]}
    document.update(changes)
    return {k: v for k, v in document.items() if v is not None}


@pytest.mark.parametrize(
    ("document", "content_type", "status", "problem"),
    [
        pytest.param(
            lambda url: good(url, client_id=url + "x"),
            "application/json",
            200,
            "its client_id is not the URL it was fetched from",
            id="client-id-mismatch",
        ),
        pytest.param(
            lambda url: good(url, redirect_uris=None),
            "application/json",
            200,
            "it lists no redirect_uris",
            id="no-redirects",
        ),
        pytest.param(
            lambda url: good(url, redirect_uris=["http://app.example.com/cb"]),
            "application/json",
            200,
            "http://app.example.com/cb must use https (plain http only for loopback hosts)",
            id="bad-redirect",
        ),
        pytest.param(
            lambda url: good(url, client_secret="s3cret"),
            "application/json",
            200,
            "it must not carry a client secret",
            id="secret",
        ),
        pytest.param(
            lambda url: good(url, token_endpoint_auth_method="client_secret_basic"),
            "application/json",
            200,
            "token_endpoint_auth_method client_secret_basic is not supported (only none)",
            id="secret-method",
        ),
        pytest.param(
            lambda url: good(url, grant_types=["client_credentials"]),
            "application/json",
            200,
            "grant_types may only be authorization_code and refresh_token",
            id="client-credentials",
        ),
        pytest.param(lambda url: [url], "application/json", 200, "it is not a JSON object", id="array"),
        pytest.param(lambda url: b"{nope", "application/json", 200, "it is not valid JSON", id="malformed"),
        pytest.param(lambda url: good(url), "text/html", 200, "it is text/html, not application/json", id="html"),
        pytest.param(
            lambda url: good(url, padding="x" * 6000),
            "application/json",
            200,
            "it is larger than 5120 bytes",
            id="too-large",
        ),
        pytest.param(
            lambda url: good(url), "application/json", 500, "fetching it answered HTTP 500", id="server-error"
        ),
    ],
)
def test_unusable_documents_are_refused_on_a_page(
    dev_client: FlaskClient, documents: DocumentServer, document: Any, content_type: str, status: int, problem: str
) -> None:
    url = documents.origin + "/client.json"
    documents.publish("/client.json", document(url), status=status, content_type=content_type)
    html = refusal_page(dev_client, url)
    assert f"<code>invalid_client</code>: The client metadata document at {url}: {problem}" in html


def test_redirects_are_not_followed(dev_client: FlaskClient, documents: DocumentServer) -> None:
    url = documents.origin + "/moved.json"
    documents.routes["/moved.json"] = (302, {"Location": documents.origin + "/client.json"}, b"")
    documents.publish("/client.json", good(url))
    assert f"The client metadata document at {url}: fetching it answered HTTP 302" in refusal_page(dev_client, url)
    assert documents.hits == ["/moved.json"]


def test_a_redirect_uri_the_document_does_not_list_is_refused(
    dev_client: FlaskClient, documents: DocumentServer
) -> None:
    url = documents.origin + "/client.json"
    documents.publish("/client.json", good(url, redirect_uris=["http://127.0.0.1:8765/elsewhere"]))
    html = refusal_page(dev_client, url)
    assert f"<code>invalid_request</code>: Redirect URI {REDIRECT_URI} is not supported by client." in html


def test_an_unreachable_host(dev_client: FlaskClient) -> None:
    html = refusal_page(dev_client, "https://client.invalid/metadata.json")
    assert "The client metadata document at https://client.invalid/metadata.json: it could not be fetched" in html


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        pytest.param("https://app.example.com/client.json", None, id="https"),
        pytest.param("http://127.0.0.1:9/client.json", None, id="loopback-http"),
        pytest.param(
            "http://app.example.com/client.json",
            "a client_id URL must use https (plain http only on loopback in development mode)",
            id="http",
        ),
        pytest.param("https://app.example.com", "a client_id URL must have a path", id="no-path"),
        pytest.param("https://app.example.com/", "a client_id URL must have a path", id="root"),
        pytest.param("https://app.example.com/a/../b.json", "a client_id URL must not contain dot segments", id="dots"),
        pytest.param("https://app.example.com/c.json#x", "a client_id URL must not contain a fragment", id="fragment"),
        pytest.param(
            "https://u:p@app.example.com/c.json", "a client_id URL must not contain credentials", id="userinfo"
        ),
        pytest.param("https://app.example.com:99999/c.json", "the client_id is not a valid URL", id="bad-port"),
        pytest.param(
            "https://app.example.com/\x00.json",
            "a client_id URL must be ASCII without spaces or control characters",
            id="control-character",
        ),
        pytest.param(
            "https://app.example.com/a b.json",
            "a client_id URL must be ASCII without spaces or control characters",
            id="space",
        ),
    ],
)
def test_url_rules(url: str, problem: str | None) -> None:
    assert url_problem(url) == problem
