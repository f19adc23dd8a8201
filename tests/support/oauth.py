"""OAuth helpers for tests of the development authorization server: PKCE, the consent form, the database.

The consent form is filled in over plain HTTP here, as a browser would: GET
the authorization URL, read the form (its action and hidden CSRF token, the
consent cookie kept by the client), POST the decision, and read the redirect.
The browser tests drive a real chromium instead.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs
from urllib.parse import urlencode
from urllib.parse import urljoin
from urllib.parse import urlsplit

import httpx2
from mcp.shared.auth import AuthorizationCodeResult
from mcp.shared.auth import OAuthClientInformationFull
from mcp.shared.auth import OAuthToken


def pkce() -> tuple[str, str]:
    """A fresh (code_verifier, S256 code_challenge) pair."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
    return verifier, challenge


@dataclass
class ConsentForm:
    action: str
    fields: dict[str, str]
    buttons: dict[str, str]


class _FormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.fields: dict[str, str] = {}
        self.buttons: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {name: value or "" for name, value in attrs}
        if tag == "form":
            self.action = attributes.get("action")
        elif tag == "input" and "name" in attributes:
            self.fields[attributes["name"]] = attributes.get("value", "")
        elif tag == "button" and "name" in attributes:
            self.buttons[attributes["value"]] = attributes["name"]


def read_form(html: str) -> ConsentForm:
    parser = _FormParser()
    parser.feed(html)
    assert parser.action is not None, html
    return ConsentForm(parser.action, parser.fields, parser.buttons)


def query_of(location: str) -> dict[str, str]:
    return {name: values[0] for name, values in parse_qs(urlsplit(location).query).items()}


def authorization_url(base: str, **params: str) -> str:
    return f"{base}/dev-issuer/authorize?{urlencode(params)}"


def consent(
    http: httpx2.Client, url: str, *, username: str = "alice", decision: str = "allow"
) -> tuple[httpx2.Response, httpx2.Response | None]:
    """Open the consent page and submit it; returns (the page, the answer to the form, if it was a form)."""
    page = http.get(url)
    if page.status_code != 200:
        return page, None
    form = read_form(page.text)
    fields = {**form.fields, "username": username, form.buttons[decision]: decision}
    return page, http.post(urljoin(url, form.action), data=fields)


class ConsentBrowser:
    """The SDK client's redirect and callback handlers, answered by filling in the consent form over HTTP."""

    def __init__(self, username: str = "alice") -> None:
        self.username = username
        self.authorization_urls: list[str] = []
        self.redirects: list[str] = []

    async def open(self, url: str) -> None:
        self.authorization_urls.append(url)
        async with httpx2.AsyncClient(timeout=30) as http:
            page = await http.get(url)
            assert page.status_code == 200, page.text
            assert page.headers["content-type"] == "text/html; charset=utf-8"
            form = read_form(page.text)
            fields = {**form.fields, "username": self.username, form.buttons["allow"]: "allow"}
            answer = await http.post(urljoin(url, form.action), data=fields)
        assert answer.status_code == 302, answer.text
        self.redirects.append(answer.headers["location"])

    async def callback(self) -> AuthorizationCodeResult:
        params = query_of(self.redirects[-1])
        return AuthorizationCodeResult(code=params["code"], state=params.get("state"), iss=params.get("iss"))


class MemoryTokenStorage:
    """The SDK's TokenStorage in memory, keeping every token set it was given."""

    def __init__(self) -> None:
        self.history: list[OAuthToken] = []
        self.client_info: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.history[-1] if self.history else None

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.history.append(tokens)

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client_info = client_info


class IssuedRecords:
    """Reads what the authorization server issued, from its database (read-only)."""

    def __init__(self, instance_path: Path) -> None:
        self.path = instance_path / "dev-issuer.sqlite3"

    def _rows(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        with closing(sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)) as db:
            return db.execute(sql, args).fetchall()

    def codes(self, client_id: str) -> list[tuple[Any, ...]]:
        """(subject, scope, used) per code issued to the client."""
        return self._rows(
            "SELECT subject, scope, used_at IS NOT NULL FROM authorization_codes WHERE client_id = ? ORDER BY rowid",
            client_id,
        )

    def refresh_tokens(self, client_id: str) -> list[tuple[Any, ...]]:
        """(subject, scope, used, revoked) per refresh token issued to the client."""
        return self._rows(
            "SELECT subject, scope, used_at IS NOT NULL, revoked_at IS NOT NULL FROM refresh_tokens "
            "WHERE client_id = ? ORDER BY rowid",
            client_id,
        )
