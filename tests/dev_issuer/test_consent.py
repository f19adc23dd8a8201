"""The authorization endpoint: the consent page, its CSRF protection, and the errors it answers."""

from __future__ import annotations

import base64
from urllib.parse import urlencode

import pytest
from flask.testing import FlaskClient
from joserfc import jwt

from tests.dev_issuer.conftest import ISSUER
from tests.dev_issuer.conftest import REDIRECT_URI
from tests.dev_issuer.conftest import RESOURCE
from tests.dev_issuer.conftest import authorize_path
from tests.dev_issuer.conftest import register
from tests.dev_issuer.conftest import submit
from tests.support.oauth import pkce
from tests.support.oauth import query_of
from tests.support.oauth import read_form


def codes(client: FlaskClient, client_id: str) -> int:
    storage = client.application.extensions["dev_authorization_server"].storage
    with storage._connect() as db:
        return int(
            db.execute("SELECT COUNT(*) FROM authorization_codes WHERE client_id = ?", (client_id,)).fetchone()[0]
        )


@pytest.fixture
def client_id(dev_client: FlaskClient) -> str:
    return str(register(dev_client, client_name="Test <Client>")["client_id"])


@pytest.fixture
def allowed_client_id(dev_client: FlaskClient, client_id: str) -> str:
    """A client someone has allowed once: its errors may go back to its redirect URI."""
    _, challenge = pkce()
    answer = submit(dev_client, dev_client.get(authorize_path(client_id, challenge)), username="ann", decision="allow")
    assert answer.status_code == 302
    return client_id


def test_the_page_names_the_client_the_destination_and_each_scope(dev_client: FlaskClient, client_id: str) -> None:
    _, challenge = pkce()
    page = dev_client.get(authorize_path(client_id, challenge))
    assert page.status_code == 200
    assert page.headers["Content-Type"] == "text/html; charset=utf-8"
    assert page.headers["Cache-Control"] == "no-store"
    assert page.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    cookie = page.headers["Set-Cookie"]
    assert cookie.startswith("dev_issuer_consent=")
    assert "; HttpOnly; Path=/dev-issuer; SameSite=Strict" in cookie
    html = page.get_data(as_text=True)
    assert "Allow Test &lt;Client&gt; to use Flask MCP server?" in html  # escaped, never markup
    assert f"Client ID <code>{client_id}</code>" in html
    assert "you go back to <strong>127.0.0.1:8765</strong>" in html
    assert "<li><code>todo:read</code>: See the todos on your list</li>" in html
    assert "<li><code>todo:delete</code>: Delete todos from your list</li>" in html
    assert "<script" not in html
    form = read_form(html)
    assert set(form.fields) == {"csrf_token", "username"}
    assert form.buttons == {"allow": "decision", "deny": "decision"}


def test_allow_issues_a_code_bound_to_the_verifier_and_the_resource(dev_client: FlaskClient, client_id: str) -> None:
    verifier, challenge = pkce()
    page = dev_client.get(authorize_path(client_id, challenge))  # no resource parameter: this server's
    answer = submit(dev_client, page, username="erin", decision="allow")
    assert answer.status_code == 302
    params = query_of(answer.headers["Location"])
    assert (params["state"], params["iss"]) == ("s1", ISSUER)
    token = dev_client.post(
        ISSUER + "/token",
        data={
            "grant_type": "authorization_code",
            "code": params["code"],
            "redirect_uri": REDIRECT_URI,
            "client_id": client_id,
            "code_verifier": verifier,
        },
    )
    assert token.status_code == 200
    assert token.headers["Cache-Control"] == "no-store"
    body = token.get_json()
    assert body["scope"] == "todo:read todo:delete"
    assert body["expires_in"] == 600
    key = dev_client.application.extensions["dev_issuer"].key
    decoded = jwt.decode(body["access_token"], key)
    assert decoded.header == {"typ": "at+jwt", "alg": "RS256", "kid": key.kid}
    claims = decoded.claims
    assert (claims["iss"], claims["sub"], claims["aud"], claims["client_id"]) == (ISSUER, "erin", RESOURCE, client_id)
    assert claims["exp"] - claims["iat"] == 600
    assert set(claims) == {"iss", "sub", "aud", "client_id", "scope", "iat", "exp", "jti"}


def test_no_requested_scope_shows_identity_only(dev_client: FlaskClient, client_id: str) -> None:
    _, challenge = pkce()
    page = dev_client.get(authorize_path(client_id, challenge, scope=None))
    assert "See who you are (no other access: it asked for no scopes)." in page.get_data(as_text=True)


@pytest.mark.parametrize(
    ("params", "error", "description"),
    [
        pytest.param(
            {"scope": "todo:read admin"},
            "invalid_scope",
            "The requested scope is invalid, unknown, or malformed.",
            id="unknown-scope",
        ),
        pytest.param(
            {"response_type": "token"},
            "unsupported_response_type",
            "response_type=token is not supported",
            id="implicit",
        ),
    ],
)
def test_errors_go_back_to_a_trusted_redirect_uri_with_iss(
    dev_client: FlaskClient, allowed_client_id: str, params: dict[str, str], error: str, description: str
) -> None:
    _, challenge = pkce()
    answer = dev_client.get(authorize_path(allowed_client_id, challenge, **params))
    assert answer.status_code == 302
    assert answer.headers["Location"].startswith(REDIRECT_URI + "?")
    assert query_of(answer.headers["Location"]) == {
        "error": error,
        "error_description": description,
        "state": "s1",
        "iss": ISSUER,
    }


@pytest.mark.parametrize(
    ("params", "error", "description"),
    [
        pytest.param(
            {"scope": "todo:read admin"},
            "invalid_scope",
            "The requested scope is invalid, unknown, or malformed.",
            id="unknown-scope",
        ),
        pytest.param(
            {"response_type": "token"},
            "unsupported_response_type",
            "response_type=token is not supported",
            id="implicit",
        ),
        pytest.param({"code_challenge": None}, "invalid_request", "PKCE is required: send", id="no-pkce"),
    ],
)
def test_a_client_nobody_allowed_gets_its_errors_on_a_page_never_a_redirect(
    dev_client: FlaskClient, params: dict[str, str | None], error: str, description: str
) -> None:
    # RFC 9700 section 4.11.2: registration is open, so anyone can register a client whose redirect URI is
    # theirs; an error redirect before any consent would send users there (an open redirector).
    landing = "https://attacker.example/landing"
    attacker = str(register(dev_client, redirect_uris=[landing])["client_id"])
    _, challenge = pkce()
    page = dev_client.get(authorize_path(attacker, challenge, redirect_uri=landing, **params))
    assert page.status_code == 400
    assert "Location" not in page.headers
    assert page.headers["Content-Type"] == "text/html; charset=utf-8"
    assert f"<code>{error}</code>: {description}" in page.get_data(as_text=True)


def test_a_denied_consent_does_not_make_a_client_trusted(dev_client: FlaskClient, client_id: str) -> None:
    _, challenge = pkce()
    denied = submit(dev_client, dev_client.get(authorize_path(client_id, challenge)), username="ann", decision="deny")
    assert query_of(denied.headers["Location"])["error"] == "access_denied"  # the user chose to go back
    page = dev_client.get(authorize_path(client_id, challenge, scope="todo:read admin"))
    assert page.status_code == 400
    assert "Location" not in page.headers


def test_two_resources_are_an_invalid_target(dev_client: FlaskClient, allowed_client_id: str) -> None:
    _, challenge = pkce()
    client_id = allowed_client_id
    path = authorize_path(client_id, challenge) + "&" + urlencode([("resource", RESOURCE), ("resource", RESOURCE)])
    answer = dev_client.get(path)
    assert query_of(answer.headers["Location"])["error"] == "invalid_target"
    assert (
        query_of(answer.headers["Location"])["error_description"] == f"Only one resource can be requested: {RESOURCE}"
    )


@pytest.mark.parametrize(
    ("params", "description"),
    [
        pytest.param({"client_id": "no-such-client"}, "The client does not exist on this server.", id="unknown-client"),
        pytest.param({"client_id": None}, "Missing &#39;client_id&#39; parameter.", id="no-client"),
    ],
)
def test_an_untrusted_request_gets_a_page_and_no_redirect(
    dev_client: FlaskClient, client_id: str, params: dict[str, str | None], description: str
) -> None:
    _, challenge = pkce()
    page = dev_client.get(authorize_path(client_id, challenge, **params))
    assert page.status_code == 400
    assert "Location" not in page.headers
    assert page.headers["Content-Type"] == "text/html; charset=utf-8"
    assert f"<code>invalid_client</code>: {description}" in page.get_data(as_text=True)


def test_redirect_uri_may_be_omitted_only_with_one_registered(dev_client: FlaskClient) -> None:
    one = str(register(dev_client)["client_id"])
    two = str(register(dev_client, redirect_uris=[REDIRECT_URI, "https://app.example.com/cb"])["client_id"])
    _, challenge = pkce()
    assert dev_client.get(authorize_path(one, challenge, redirect_uri=None)).status_code == 200
    page = dev_client.get(authorize_path(two, challenge, redirect_uri=None))
    assert page.status_code == 400
    assert "<code>invalid_request</code>: Missing &#39;redirect_uri&#39; in request." in page.get_data(as_text=True)


class TestCSRF:
    def test_a_form_posted_without_the_cookie_is_refused(self, dev_client: FlaskClient, client_id: str) -> None:
        _, challenge = pkce()
        page = dev_client.get(authorize_path(client_id, challenge))
        dev_client.delete_cookie("dev_issuer_consent", domain="127.0.0.1", path="/dev-issuer")
        answer = submit(dev_client, page, username="mallory", decision="allow")
        assert answer.status_code == 403
        assert "This consent form expired or did not come from this page." in answer.get_data(as_text=True)
        assert codes(dev_client, client_id) == 0

    def test_a_token_for_another_request_is_refused(self, dev_client: FlaskClient, client_id: str) -> None:
        _, challenge = pkce()
        page = dev_client.get(authorize_path(client_id, challenge))
        token = read_form(page.get_data(as_text=True)).fields["csrf_token"]
        other = authorize_path(client_id, challenge, scope="todo:read todo:write todo:delete")
        answer = dev_client.post(other, data={"csrf_token": token, "username": "mallory", "decision": "allow"})
        assert answer.status_code == 403
        assert codes(dev_client, client_id) == 0

    def test_extra_form_fields_are_refused(self, dev_client: FlaskClient, client_id: str) -> None:
        _, challenge = pkce()
        page = dev_client.get(authorize_path(client_id, challenge))
        answer = submit(dev_client, page, username="erin", decision="allow", code_challenge="x" * 43)
        assert answer.status_code == 403
        assert codes(dev_client, client_id) == 0

    def test_a_wrong_token_is_refused(self, dev_client: FlaskClient, client_id: str) -> None:
        _, challenge = pkce()
        page = dev_client.get(authorize_path(client_id, challenge))
        forged = base64.b16encode(b"x" * 32).decode().lower()
        answer = submit(dev_client, page, csrf_token=forged, username="erin", decision="allow")
        assert answer.status_code == 403
        assert codes(dev_client, client_id) == 0


@pytest.mark.parametrize("username", ["", "   ", "has space", "x" * 65, "<script>"])
def test_an_invalid_user_name_shows_the_form_again(dev_client: FlaskClient, client_id: str, username: str) -> None:
    _, challenge = pkce()
    page = dev_client.get(authorize_path(client_id, challenge))
    answer = submit(dev_client, page, username=username, decision="allow")
    assert answer.status_code == 400
    html = answer.get_data(as_text=True)
    assert "Enter a user name: 1 to 64 letters, digits or . _ @ + -" in html
    assert "<script>" not in html
    assert codes(dev_client, client_id) == 0
    # The form shown again still works.
    retry = submit(dev_client, answer, username="erin", decision="allow")
    assert retry.status_code == 302
    assert codes(dev_client, client_id) == 1


def test_a_decision_must_be_allow_or_deny(dev_client: FlaskClient, client_id: str) -> None:
    _, challenge = pkce()
    page = dev_client.get(authorize_path(client_id, challenge))
    answer = submit(dev_client, page, username="erin", decision="maybe")
    assert answer.status_code == 400
    assert "The decision must be Allow or Deny." in answer.get_data(as_text=True)
    assert codes(dev_client, client_id) == 0


def test_a_confidential_client_must_authenticate_at_the_token_endpoint(dev_client: FlaskClient) -> None:
    registered = register(dev_client, token_endpoint_auth_method="client_secret_basic")
    client_id, secret = str(registered["client_id"]), str(registered["client_secret"])
    verifier, challenge = pkce()
    answer = submit(dev_client, dev_client.get(authorize_path(client_id, challenge)), username="erin", decision="allow")
    code = query_of(answer.headers["Location"])["code"]
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI, "code_verifier": verifier}
    anonymous = dev_client.post(ISSUER + "/token", data={**data, "client_id": client_id})
    assert anonymous.status_code == 401
    assert anonymous.get_json()["error"] == "invalid_client"
    assert anonymous.headers["WWW-Authenticate"].startswith('Basic error="invalid_client"')
    basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    token = dev_client.post(ISSUER + "/token", data=data, headers={"Authorization": f"Basic {basic}"})
    assert token.status_code == 200, token.get_json()
    # Registered for authorization_code only (the RFC 7591 default), so no refresh token.
    assert "refresh_token" not in token.get_json()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        pytest.param("redirect_uri", 'http://127.0.0.1:8765/"cb', id="quote-in-redirect"),
        pytest.param("redirect_uri", "http://127.0.0.1:8765/\\cb", id="backslash-in-redirect"),
        pytest.param("response_type", 'co"de', id="quote-in-response-type"),
        pytest.param("state", "line\nbreak", id="control-in-state"),
        pytest.param("scope", "todo:réad", id="non-ascii-scope"),
        pytest.param("state", "x" * 2049, id="huge-state"),
    ],
)
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_malformed_parameters_get_a_page_not_a_crash(
    dev_client: FlaskClient, client_id: str, name: str, value: str, method: str
) -> None:
    _, challenge = pkce()
    answer = dev_client.open(authorize_path(client_id, challenge, **{name: value}), method=method)
    assert answer.status_code == 400
    assert "Location" not in answer.headers
    assert (
        f"<code>invalid_request</code>: The {name} parameter is malformed "
        "(printable ASCII, at most 2048 characters)." in answer.get_data(as_text=True)
    )
