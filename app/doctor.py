"""``flask --app wsgi mcp doctor``: checks the configuration against the identity provider it names.

"OAuth succeeded, then the connection failed" is almost always one of a few
mismatches: the audience the provider puts in tokens is not the resource URL
(a trailing slash, another scheme, upper-case host), the issuer differs by a
slash, the metadata cannot be found where clients look, the clock is off. The
doctor fetches what a client and this server would fetch and says which it is.
With ``--token`` it takes a real token apart and says which claim fails and why.
"""

from __future__ import annotations

import binascii
import email.utils
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field
from typing import Any
from urllib.parse import urlsplit

from joserfc.util import json_b64decode

from app.auth.challenges import InvalidToken
from app.auth.challenges import VerifierUnavailable
from app.auth.jwks import FETCH_TIMEOUT
from app.auth.jwks import KeyFetchError
from app.auth.jwks import fetch_json
from app.auth.jwks import import_signing_keys
from app.auth.jwks import metadata_attempts
from app.auth.jwt_access_token import ALLOWED_ALGORITHMS
from app.auth.jwt_access_token import Audiences
from app.auth.jwt_access_token import normalize_audience
from app.auth.token_verification import TokenVerifier
from app.settings import IssuerConfig
from app.settings import Settings
from app.urls import is_loopback_host


@dataclass
class Report:
    lines: list[tuple[str, str]] = field(default_factory=list)

    def ok(self, text: str) -> None:
        self.lines.append(("ok", text))

    def warn(self, text: str) -> None:
        self.lines.append(("WARN", text))

    def fail(self, text: str) -> None:
        self.lines.append(("FAIL", text))

    def info(self, text: str) -> None:
        self.lines.append(("", text))

    @property
    def exit_code(self) -> int:
        """1 if anything fails, 2 if something only deserves a look, 0 when all is well."""
        levels = {level for level, _ in self.lines}
        return 1 if "FAIL" in levels else 2 if "WARN" in levels else 0

    def render(self) -> str:
        return "\n".join(f"{level:>5}  {text}" if level else f"       {text}" for level, text in self.lines)


def _server_date(url: str) -> float | None:
    """The ``Date`` a server reports, to compare clocks."""
    try:
        with urllib.request.urlopen(url, timeout=FETCH_TIMEOUT) as response:  # noqa: S310 (URL from settings)
            date = response.headers.get("Date")
    except urllib.error.HTTPError as error:
        date = error.headers.get("Date")
        error.close()
    except (OSError, ValueError):
        return None
    parsed = email.utils.parsedate_to_datetime(date) if date else None
    return parsed.timestamp() if parsed else None


def check_audiences(settings: Settings, config: IssuerConfig, report: Report) -> None:
    resource = settings.resource_url
    if resource in config.audiences:
        report.ok(f"the resource URL {resource} is an accepted audience")
        return
    near = [a for a in config.audiences if normalize_audience(a) == normalize_audience(resource)]
    for audience in near:
        differences = []
        if audience.endswith("/") != resource.endswith("/"):
            differences.append("a trailing slash")
        if urlsplit(audience).scheme != urlsplit(resource).scheme:
            differences.append("the scheme's case")
        if urlsplit(audience).netloc != urlsplit(resource).netloc:
            differences.append("the host's case")
        report.warn(
            f"audience {audience!r} differs from MCP_RESOURCE_URL {resource!r} only by "
            f"{' and '.join(differences) or 'spelling'}: accepted, but clients send the resource URL as RFC 8707 "
            "resource, so make the provider use exactly that"
        )
    if not near:
        report.info(f"accepted audiences: {', '.join(config.audiences)} (none of them is the resource URL)")


def check_issuer(settings: Settings, config: IssuerConfig, report: Report) -> None:
    metadata: dict[str, Any] | None = None
    for attempt in metadata_attempts(config.issuer):
        if attempt.document is None:
            report.info(f"no metadata at {attempt.url} ({attempt.problem})")
            continue
        if attempt.problem is not None:
            report.fail(
                f"{attempt.url} names issuer {attempt.document.get('issuer')!r}, not {config.issuer!r}: the tokens' "
                "iss must equal MCP_ISSUER exactly (a trailing slash counts)"
            )
            continue
        report.ok(f"metadata at {attempt.url}")
        metadata = attempt.document
        break
    if metadata is None and config.jwks_uri is None:
        report.fail(f"no usable RFC 8414 or OpenID metadata for {config.issuer}: set MCP_JWKS_URI")
    if metadata is not None:
        if "S256" not in metadata.get("code_challenge_methods_supported", []):
            report.warn("the metadata does not list code_challenge_methods_supported S256: MCP clients refuse that")
        jwks_uri = metadata.get("jwks_uri")
        if config.jwks_uri and jwks_uri and jwks_uri != config.jwks_uri:
            report.warn(f"MCP_JWKS_URI {config.jwks_uri} differs from the metadata's jwks_uri {jwks_uri}")
    uri = config.jwks_uri or (metadata or {}).get("jwks_uri")
    if isinstance(uri, str):
        try:
            keys = import_signing_keys(fetch_json(uri))
            kinds = sorted({f"{key.key_type}" for key in keys.values()})
            report.ok(f"{len(keys)} signing key(s) at {uri}: kids {sorted(map(str, keys))}, types {kinds}")
        except KeyFetchError as error:
            report.fail(f"signing keys at {uri}: {error}")
        skew = _server_date(uri)
        if skew is not None:
            offset = time.time() - skew  # positive: this clock is ahead
            if abs(offset) > settings.clock_leeway:
                report.fail(
                    f"this clock is {offset:+.0f} s off the issuer's, beyond the {settings.clock_leeway} s leeway"
                )
            elif abs(offset) > 5:
                report.warn(f"this clock is {offset:+.0f} s off the issuer's (leeway {settings.clock_leeway} s)")
            else:
                report.ok(f"clock within {abs(offset):.0f} s of the issuer's")


def check_authorization_servers(settings: Settings, report: Report) -> None:
    issuers = {config.issuer for config in settings.issuers}
    for server in settings.authorization_servers:
        if server in issuers:
            continue
        # Strict clients look only where RFC 8414 section 3.1 says: the first URL.
        first = next(metadata_attempts(server))
        if first.document is None:
            report.fail(f"advertised authorization server {server} has no metadata clients can find: {first.problem}")
        elif first.problem is not None:
            report.fail(
                f"{first.url} names issuer {first.document.get('issuer')!r}: strict clients will refuse {server}"
            )
        else:
            report.ok(f"advertised authorization server {server} has matching metadata")


def check_token(settings: Settings, verifier: TokenVerifier, token: str, report: Report) -> None:
    parts = token.split(".")
    if len(parts) != 3:
        report.info(f"the token has {len(parts)} part(s): not a signed JWT")
    else:
        try:
            header, claims = json_b64decode(parts[0].encode()), json_b64decode(parts[1].encode())
        except (ValueError, binascii.Error):
            report.fail("the token's header or payload is not base64url JSON")
            return
        report.info(f"header: {json.dumps(header)}")
        shown = {
            k: claims.get(k) for k in ("iss", "sub", "aud", "client_id", "azp", "scope", "scp", "exp", "nbf", "iat")
        }
        report.info(f"claims: {json.dumps({k: v for k, v in shown.items() if v is not None})}")
        if header.get("alg") not in ALLOWED_ALGORITHMS:
            report.fail(f"alg {header.get('alg')!r} is not one of {', '.join(ALLOWED_ALGORITHMS)}")
        issuers = [config.issuer for config in settings.issuers]
        if claims.get("iss") not in issuers:
            hint = ""
            if any(str(claims.get("iss", "")).rstrip("/") == i.rstrip("/") for i in issuers):
                hint = " (they differ by a trailing slash)"
            report.fail(f"iss {claims.get('iss')!r} is not MCP_ISSUER {' or '.join(map(repr, issuers))}{hint}")
        config = next((c for c in settings.issuers if c.issuer == claims.get("iss")), None)
        audiences = claims.get("aud")
        if config is not None and not Audiences(config.audiences).accepts(audiences):
            report.fail(f"aud {audiences!r} names none of the accepted audiences {list(config.audiences)}")
        now = time.time()
        late: Callable[[float], bool]
        for name, late, message in (
            ("exp", lambda v: v <= now - settings.clock_leeway, "expired {age} ago"),
            ("nbf", lambda v: v > now + settings.clock_leeway, "not valid for another {age}"),
            ("iat", lambda v: v > now + settings.clock_leeway, "issued {age} in the future"),
        ):
            value = claims.get(name)
            if isinstance(value, int | float) and late(value):
                report.fail(f"{name}: " + message.format(age=f"{abs(now - value):.0f} s"))
    try:
        principal = verifier.validate(token)
    except InvalidToken as error:
        report.fail(f"this server refuses the token: {error.description}")
    except VerifierUnavailable as error:
        report.fail(f"this server cannot verify tokens now: {error}")
    else:
        report.ok(f"this server accepts the token: sub {principal.sub!r}, scopes {list(principal.scopes)}")
        if principal.jkt is not None:
            # RFC 9449 section 7.2: a bound token is never accepted as a bearer token.
            (report.fail if settings.dpop == "off" else report.info)(
                f"the token is DPoP-bound (cnf.jkt {principal.jkt}): it is accepted only with the DPoP scheme and "
                "a proof from that key" + (", which MCP_DPOP=off refuses" if settings.dpop == "off" else "")
            )


def diagnose(settings: Settings, verifier: TokenVerifier, token: str | None = None) -> Report:
    report = Report()
    report.info(f"resource: {settings.resource_url}   profile: {settings.token_profile}")
    for url, name in [
        (settings.resource_url, "MCP_RESOURCE_URL"),
        *[(c.issuer, "MCP_ISSUER") for c in settings.issuers],
    ]:
        if urlsplit(url).scheme == "http":
            message = f"{name} {url} is plain http (allowed on loopback only, for development and tests)"
            (report.info if is_loopback_host(urlsplit(url).hostname) else report.fail)(message)
    for config in settings.issuers:
        report.info(f"issuer {config.issuer}")
        check_audiences(settings, config, report)
        check_issuer(settings, config, report)
    check_authorization_servers(settings, report)
    if token is not None:
        report.info("token")
        check_token(settings, verifier, token, report)
    return report
