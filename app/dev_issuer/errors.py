"""OAuth error codes Authlib has no class for, and safe error descriptions."""

from __future__ import annotations

import re

from authlib.oauth2.rfc6749 import OAuth2Error

# RFC 6749 section 5.2: error_description MUST NOT include characters outside %x20-21 / %x23-5B / %x5D-7E.
_UNSAFE = re.compile(r"[^\x20\x21\x23-\x5b\x5d-\x7e]")


def safe_description(text: str) -> str:
    """``text`` with every character an error_description may not carry replaced by ``?``."""
    return _UNSAFE.sub("?", text)[:300]


class InvalidTargetError(OAuth2Error):
    """RFC 8707 section 2: the requested resource is invalid, unknown or malformed."""

    error = "invalid_target"


class InvalidDPoPProofError(OAuth2Error):
    """RFC 9449 section 5: the DPoP proof of a token request is invalid (400)."""

    error = "invalid_dpop_proof"


class UseDPoPNonceError(OAuth2Error):
    """RFC 9449 section 8: the proof must carry this server's nonce, sent in ``DPoP-Nonce`` (400)."""

    error = "use_dpop_nonce"

    def __init__(self, description: str, nonce: str) -> None:
        super().__init__(description=description)
        self.nonce = nonce

    def get_headers(self) -> list[tuple[str, str]]:
        return [*super().get_headers(), ("DPoP-Nonce", self.nonce)]
