"""CSRF protection for the consent form: a cookie nonce, and a form token bound to it and to the request.

The consent page sets a random nonce in a ``SameSite=Strict``, HttpOnly cookie
scoped to the issuer's path, and puts HMAC(key, nonce + query string) in the
form. A decision is accepted only when the form's token matches the cookie
sent with it and the authorization request it is posted to: another site can
neither read the token nor make the browser send the cookie, and a token
cannot be replayed onto a different authorization request. The key derives
from the instance folder's secret, so every worker accepts every worker's form.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from app.settings import DEV_ISSUER_PATH

COOKIE_NAME = "dev_issuer_consent"
COOKIE_PATH = DEV_ISSUER_PATH


class ConsentForms:
    def __init__(self, secret: str) -> None:
        self._key = hmac.new(secret.encode(), b"dev-issuer consent form", hashlib.sha256).digest()

    @staticmethod
    def new_nonce() -> str:
        return secrets.token_urlsafe(32)

    def token(self, nonce: str, query_string: bytes) -> str:
        return hmac.new(self._key, nonce.encode() + b"\n" + query_string, hashlib.sha256).hexdigest()

    def valid(self, nonce: str | None, query_string: bytes, token: str | None) -> bool:
        if not nonce or not token:
            return False
        return hmac.compare_digest(self.token(nonce, query_string), token)
