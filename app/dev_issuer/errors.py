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
