"""The development issuer's signing key, its JWK Set, and RFC 9068 tokens minted with it.

https://www.rfc-editor.org/rfc/rfc9068#section-2

The RSA key is created once and kept in the instance folder, so tokens stay
valid across restarts and every worker process signs and verifies with the
same key. The authorization server signs its access tokens with it, and
``flask --app wsgi mcp token`` mints tokens with it directly.
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

from joserfc import jwt
from joserfc.jwk import KeySet
from joserfc.jwk import RSAKey

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
    """The key and identity of the development issuer; every worker loads the same key."""

    def __init__(self, instance_path: str, settings: Settings) -> None:
        folder = Path(instance_path)
        key_json = _load_or_create(
            folder / KEY_FILE, lambda: json.dumps(RSAKey.generate_key(2048, auto_kid=True).as_dict(private=True))
        )
        self.key = RSAKey.import_key(json.loads(key_json))
        self.issuer = settings.issuer
        self.resource_url = settings.resource_url
        self.state_secret = _load_or_create(folder / STATE_SECRET_FILE, lambda: secrets.token_urlsafe(48)).strip()

    @property
    def jwks_uri(self) -> str:
        return self.issuer + "/jwks.json"

    def key_set(self) -> KeySet:
        """The private key as a joserfc key set, so signed tokens carry its ``kid``."""
        return KeySet([self.key])

    def jwks(self) -> dict[str, Any]:
        return {"keys": [{**self.key.as_dict(private=False), "use": "sig", "alg": "RS256"}]}

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
