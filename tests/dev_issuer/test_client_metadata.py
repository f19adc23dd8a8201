"""Client ID metadata documents: a client_id that is a URL, fetched, checked, cached, shown by its host.

The address checks run against a stubbed resolver: no test here sends anything to an address but loopback.
"""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from flask.testing import FlaskClient

from app.dev_issuer.client_metadata import FAILURE_CACHE_SECONDS
from app.dev_issuer.client_metadata import FETCH_TIMEOUT
from app.dev_issuer.client_metadata import MAX_DOCUMENT_BYTES
from app.dev_issuer.client_metadata import url_problem
from app.dev_issuer.public_fetch import PublicFetcher
from tests.dev_issuer.conftest import REDIRECT_URI
from tests.dev_issuer.conftest import authorize_path
from tests.dev_issuer.conftest import redeem
from tests.dev_issuer.conftest import submit
from tests.support.oauth import pkce
from tests.support.oauth import query_of
from tests.support.tls import TLSFiles
from tests.support.tls import make_tls_files


class DocumentServer:
    """Serves whatever each test puts in ``routes``: path -> (status, headers, body); over TLS with ``tls``."""

    def __init__(self, tls: TLSFiles | None = None) -> None:
        self.routes: dict[str, tuple[int, dict[str, str], bytes]] = {}
        self.hits: list[str] = []
        self.hosts: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.hits.append(self.path)
                outer.hosts.append(self.headers.get("Host", ""))
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
        self.port = int(self.httpd.server_address[1])
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(tls.fullchain, tls.private_key)
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.origin = f"http://127.0.0.1:{self.port}"
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


class DripServer:
    """An HTTP server on loopback that answers one byte every 0.2 s, in its headers or in its body."""

    def __init__(self, stage: str) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._stop = threading.Event()
        self._stage = stage
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self._listener.settimeout(0.1)
        while not self._stop.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            with connection:
                connection.recv(4096)
                head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 4000\r\n"
                if self._stage == "body":
                    connection.sendall(head + b"\r\n")
                    drip = b" " * 4000
                else:
                    drip = b"X-Padding: " + b"x" * 4000
                for byte in drip:
                    if self._stop.wait(0.2):
                        break
                    try:
                        connection.sendall(bytes([byte]))
                    except OSError:
                        break

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._listener.close()


@pytest.fixture
def documents() -> Iterator[DocumentServer]:
    server = DocumentServer()
    yield server
    server.close()


def authorize(client: FlaskClient, client_id: str, challenge: str) -> Any:
    return client.get(authorize_path(client_id, challenge, scope="todo:read"))


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

    answer = submit(dev_client, page, username="fay", decision="allow")
    token = redeem(dev_client, url, query_of(answer.headers["Location"])["code"], verifier)
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


class StubNetwork:
    """A resolver and a connector for the fetcher: names resolve as the test says, and a connection goes to
    a loopback server (or nowhere: ``connect_to`` None fails the test), whatever address was asked for."""

    def __init__(
        self,
        answers: dict[str, list[str]],
        connect_to: tuple[str, int] | None = None,
        *,
        rebound: dict[str, list[str]] | None = None,
    ) -> None:
        """``rebound``: what the names resolve to from the second lookup on (DNS rebinding)."""
        self.answers = answers
        self.rebound = rebound or answers
        self.connect_to = connect_to
        self.lookups: list[str] = []
        self.connections: list[tuple[str, int]] = []

    def resolve(self, host: str, port: int) -> list[str]:
        answers = self.rebound if host in self.lookups else self.answers
        self.lookups.append(host)
        if host not in answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return answers[host]

    def connect(self, address: str, port: int, timeout: float) -> socket.socket:
        self.connections.append((address, port))
        assert self.connect_to is not None, f"the fetcher connected to {address}:{port}"
        return socket.create_connection(self.connect_to, timeout=timeout)

    def install(self, client: FlaskClient, **options: Any) -> PublicFetcher:
        fetcher = PublicFetcher(
            timeout=options.pop("timeout", FETCH_TIMEOUT),
            max_bytes=MAX_DOCUMENT_BYTES,
            resolver=self.resolve,
            connector=self.connect,
            **options,
        )
        client.application.extensions["dev_authorization_server"].documents.fetcher = fetcher
        return fetcher


def test_an_unresolvable_host(dev_client: FlaskClient) -> None:
    network = StubNetwork({})
    network.install(dev_client)
    html = refusal_page(dev_client, "https://client.invalid/metadata.json")
    assert (
        "The client metadata document at https://client.invalid/metadata.json: its host client.invalid could not "
        "be resolved" in html
    )
    assert network.connections == []


@pytest.mark.parametrize(
    ("url", "answers", "address", "kind"),
    [
        pytest.param("https://client.example/c.json", ["169.254.169.254"], "169.254.169.254", "public", id="metadata"),
        pytest.param("https://client.example/c.json", ["10.0.0.7"], "10.0.0.7", "public", id="private-10"),
        pytest.param("https://client.example/c.json", ["192.168.1.20"], "192.168.1.20", "public", id="private-192"),
        pytest.param("https://client.example/c.json", ["172.16.0.1"], "172.16.0.1", "public", id="private-172"),
        pytest.param("https://client.example/c.json", ["100.64.0.1"], "100.64.0.1", "public", id="shared-cgnat"),
        pytest.param("https://client.example/c.json", ["fd00::1"], "fd00::1", "public", id="ula"),
        pytest.param("https://client.example/c.json", ["fe80::1%eth0"], "fe80::1%eth0", "public", id="link-local-v6"),
        pytest.param("https://client.example/c.json", ["::ffff:10.0.0.1"], "::ffff:10.0.0.1", "public", id="v4-mapped"),
        pytest.param("https://client.example/c.json", ["0.0.0.0"], "0.0.0.0", "public", id="unspecified"),  # noqa: S104
        pytest.param("https://client.example/c.json", ["127.0.0.1"], "127.0.0.1", "public", id="loopback-https"),
        pytest.param(
            "https://client.example/c.json", ["93.184.215.14", "10.0.0.7"], "10.0.0.7", "public", id="one-of-two"
        ),
        pytest.param("https://127.0.0.1:6379/c.json", ["127.0.0.1"], "127.0.0.1", "public", id="local-redis"),
        pytest.param("https://[fd00::1]/c.json", ["fd00::1"], "fd00::1", "public", id="ula-literal"),
        pytest.param("https://169.254.169.254/c.json", ["169.254.169.254"], "169.254.169.254", "public", id="imds"),
        pytest.param("http://localhost:8080/c.json", ["10.0.0.7"], "10.0.0.7", "loopback", id="http-not-loopback"),
    ],
)
def test_non_public_addresses_are_refused_before_any_connection(
    dev_client: FlaskClient, url: str, answers: list[str], address: str, kind: str
) -> None:
    host = str(urlsplit(url).hostname)
    network = StubNetwork({host: answers})
    network.install(dev_client)
    html = refusal_page(dev_client, url)
    problem = f"its host {host} resolves to {address}, which is not a {kind} address"
    assert f"The client metadata document at {url}: {problem}" in html
    assert network.lookups == [host]
    assert network.connections == []  # resolved and refused: nothing was ever sent anywhere


def test_the_checked_address_is_the_one_connected_to_and_tls_checks_the_name(
    dev_client: FlaskClient, tmp_path: Path
) -> None:
    tls = make_tls_files(tmp_path / "tls", names=("client.example",))
    server = DocumentServer(tls=tls)
    try:
        url = f"https://client.example:{server.port}/c.json"
        server.publish("/c.json", good(url))
        # A name that answers a public address once, and a private one after (DNS rebinding).
        network = StubNetwork(
            {"client.example": ["93.184.215.14"]},
            connect_to=("127.0.0.1", server.port),
            rebound={"client.example": ["10.0.0.7"]},
        )
        network.install(dev_client, tls=tls.client_context())
        _, challenge = pkce()
        page = authorize(dev_client, url, challenge)
        assert page.status_code == 200, page.get_data(as_text=True)
        assert network.lookups == ["client.example"]  # resolved once, for the check and the connection
        assert network.connections == [("93.184.215.14", server.port)]
        assert server.hosts == [f"client.example:{server.port}"]
    finally:
        server.close()


def test_a_certificate_for_another_name_is_refused(dev_client: FlaskClient, tmp_path: Path) -> None:
    tls = make_tls_files(tmp_path / "tls")  # 127.0.0.1 and localhost only
    server = DocumentServer(tls=tls)
    try:
        url = f"https://client.example:{server.port}/c.json"
        server.publish("/c.json", good(url))
        network = StubNetwork({"client.example": ["93.184.215.14"]}, connect_to=("127.0.0.1", server.port))
        network.install(dev_client, tls=tls.client_context())
        html = refusal_page(dev_client, url)
        assert f"The client metadata document at {url}: it could not be fetched (TLS: " in html
        assert "certificate verify failed" in html
        assert server.hits == []
    finally:
        server.close()


@pytest.mark.parametrize("stage", ["headers", "body"])
def test_a_server_that_answers_drop_by_drop_is_given_up_on_in_time(dev_client: FlaskClient, stage: str) -> None:
    server = DripServer(stage)
    try:
        url = f"http://127.0.0.1:{server.port}/c.json"
        StubNetwork({"127.0.0.1": ["127.0.0.1"]}, connect_to=("127.0.0.1", server.port)).install(
            dev_client, timeout=1.0
        )
        started = time.monotonic()
        html = refusal_page(dev_client, url)
        elapsed = time.monotonic() - started
        assert f"The client metadata document at {url}: it could not be fetched within 1 s" in html
        # One byte every 0.2 s never lets a read time out: only a deadline for the whole fetch ends it.
        assert 0.9 < elapsed < 2.0, elapsed
    finally:
        server.close()


def test_a_failed_fetch_is_remembered_briefly(dev_client: FlaskClient, documents: DocumentServer) -> None:
    url = documents.publish("/broken.json", {"error": "down"}, status=503)
    now = [1000.0]
    documents_resolver = dev_client.application.extensions["dev_authorization_server"].documents
    documents_resolver._clock = lambda: now[0]
    problem = f"The client metadata document at {url}: fetching it answered HTTP 503"
    for _ in range(3):
        assert problem in refusal_page(dev_client, url)
    assert documents.hits == ["/broken.json"]  # asked three times, fetched once
    now[0] += FAILURE_CACHE_SECONDS + 1
    documents.publish("/broken.json", good(url))
    _, challenge = pkce()
    assert authorize(dev_client, url, challenge).status_code == 200
    assert documents.hits == ["/broken.json", "/broken.json"]


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
