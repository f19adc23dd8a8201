"""Development mode's own token issuer (MCP_DEV=1): a signing key, its JWK Set and RFC 8414 metadata.

https://www.rfc-editor.org/rfc/rfc8414#section-3

The RSA key is created once and kept in the instance folder, so tokens stay
valid across restarts and every worker process signs and verifies with the
same key. ``flask --app wsgi mcp token`` mints RFC 9068 access tokens with it.
None of this exists unless MCP_DEV=1.
"""

from __future__ import annotations

import json
import os
import secrets
import time
import uuid
from collections.abc import Callable
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from authlib.oauth2.rfc8414 import get_well_known_url
from flask import Blueprint
from flask import Flask
from flask import Response
from joserfc import jwt
from joserfc.jwk import RSAKey

from app.auth import public
from app.settings import DEV_ISSUER_PATH
from app.settings import Settings

KEY_FILE = "dev-issuer-key.json"
STATE_SECRET_FILE = "dev-state-secret"  # noqa: S105 (a file name)
DEFAULT_LIFETIME = 3600


def _load_or_create(path: Path, create: Callable[[], str]) -> str:
    """Read ``path``, creating it (mode 0600) first if needed; the first process to create it wins.

    Several workers start at once on a fresh instance folder: each writes its
    candidate to a private temporary file and links it into place only if no
    file is there yet, so all of them end up reading the same key.
    """
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(create())
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
    return path.read_text()


class DevIssuer:
    def __init__(self, instance_path: str, settings: Settings) -> None:
        folder = Path(instance_path)
        key_json = _load_or_create(
            folder / KEY_FILE, lambda: json.dumps(RSAKey.generate_key(2048, auto_kid=True).as_dict(private=True))
        )
        self.key = RSAKey.import_key(json.loads(key_json))
        self.issuer = settings.issuer
        self.resource_url = settings.resource_url
        self.scopes_supported = settings.scopes_supported
        self.state_secret = _load_or_create(folder / STATE_SECRET_FILE, lambda: secrets.token_urlsafe(48)).strip()

    @property
    def jwks_uri(self) -> str:
        return self.issuer + "/jwks.json"

    def jwks(self) -> dict[str, Any]:
        return {"keys": [{**self.key.as_dict(private=False), "use": "sig", "alg": "RS256"}]}

    def metadata(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "issuer": self.issuer,
            "jwks_uri": self.jwks_uri,
            "response_types_supported": ["code"],
            "grant_types_supported": ["authorization_code"],
            "code_challenge_methods_supported": ["S256"],
        }
        if self.scopes_supported:
            document["scopes_supported"] = list(self.scopes_supported)
        return document

    def mint(
        self,
        sub: str,
        scopes: Iterable[str] = (),
        *,
        lifetime: int = DEFAULT_LIFETIME,
        client_id: str = "dev-cli",
        audience: str | None = None,
    ) -> str:
        """An RFC 9068 access token for this server, signed with the development key."""
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": sub,
            "aud": audience or self.resource_url,
            "client_id": client_id,
            "scope": " ".join(scopes),
            "iat": now,
            "exp": now + lifetime,
            "jti": uuid.uuid4().hex,
        }
        header = {"alg": "RS256", "kid": self.key.kid, "typ": "at+jwt"}
        return jwt.encode(header, claims, self.key, algorithms=["RS256"])


def init_app(app: Flask, issuer: DevIssuer) -> None:
    app.extensions["dev_issuer"] = issuer
    metadata = json.dumps(issuer.metadata(), indent=2).encode()
    jwks = json.dumps(issuer.jwks()).encode()
    blueprint = Blueprint("dev_issuer", __name__)

    @public
    def authorization_server_metadata() -> Response:
        return Response(metadata, mimetype="application/json", headers={"Cache-Control": "no-cache"})

    @public
    def json_web_key_set() -> Response:
        return Response(jwks, mimetype="application/json", headers={"Cache-Control": "no-cache"})

    paths = []
    for suffix in ("oauth-authorization-server", "openid-configuration"):
        # RFC 8414 section 3.1 path insertion, and the appended form older clients try.
        paths += [get_well_known_url(issuer.issuer, suffix=suffix), f"{DEV_ISSUER_PATH}/.well-known/{suffix}"]
    for number, path in enumerate(paths):
        blueprint.add_url_rule(path, endpoint=f"metadata_{number}", view_func=authorization_server_metadata)
    blueprint.add_url_rule(f"{DEV_ISSUER_PATH}/jwks.json", view_func=json_web_key_set)
    app.register_blueprint(blueprint)
