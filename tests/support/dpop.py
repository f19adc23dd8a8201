"""The client side of DPoP (RFC 9449) for tests: proofs, and the official SDK's OAuth clients with DPoP.

:class:`DPoPKey` signs proofs with joserfc's JWS algorithms. Every part of a
proof can be overridden (a header member or claim set to ``None`` is left
out), so the negative tests can build each defect on purpose.

:class:`DPoPAuth` adds DPoP to the SDK's ``httpx2.Auth`` OAuth providers
(``OAuthClientProvider``, ``ClientCredentialsOAuthProvider``) by wrapping
their auth flow, request by request: a proof on every token request, and the
``DPoP`` scheme with a proof (``ath`` included) on every request that carries
a DPoP-bound token; a ``use_dpop_nonce`` answer from either server is retried
once with the nonce it sent. The SDK models only ``token_type: Bearer``
(``OAuthToken``), so a ``DPoP`` token response is remembered as bound and
handed to the SDK as Bearer; the wrapper then presents it with the DPoP scheme.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from collections.abc import AsyncGenerator
from typing import Any

import httpx2
from joserfc.jwk import ECKey
from joserfc.jwk import Key
from joserfc.jwk import OKPKey
from joserfc.jwk import RSAKey
from joserfc.jws import JWSRegistry
from mcp.client.auth import OAuthClientProvider
from mcp.client.auth.extensions.client_credentials import ClientCredentialsOAuthProvider

ALGORITHM_OF = {"EC": "ES256", "RSA": "PS256", "OKP": "Ed25519"}
#: The algs parameter of the DPoP challenge with the default MCP_DPOP_ALGORITHMS.
DEFAULT_ALGS = 'algs="ES256 ES384 ES512 PS256 PS384 PS512 RS256 RS384 RS512 Ed25519 EdDSA"'
DEFAULT_ALGORITHMS = [
    "ES256",
    "ES384",
    "ES512",
    "PS256",
    "PS384",
    "PS512",
    "RS256",
    "RS384",
    "RS512",
    "Ed25519",
    "EdDSA",
]


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def ath_of(token: str) -> str:
    return b64(hashlib.sha256(token.encode()).digest())


def compact(header: dict[str, Any], claims: dict[str, Any] | bytes, key: Key, alg: str) -> str:
    """A JWS in compact form, signed with ``alg`` whatever the header says (so defects can be built)."""
    payload = claims if isinstance(claims, bytes) else json.dumps(claims).encode()
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(payload)}"
    signature = JWSRegistry.algorithms[alg].sign(signing_input.encode(), key)
    return f"{signing_input}.{b64(signature)}"


class DPoPKey:
    """A client's DPoP key pair."""

    def __init__(self, key: Key, alg: str | None = None) -> None:
        self.key = key
        self.alg = alg or ALGORITHM_OF[key.key_type]
        self.public_jwk = key.as_dict(private=False)
        self.jkt = key.thumbprint()

    @classmethod
    def generate(cls, kind: str = "EC", alg: str | None = None) -> DPoPKey:
        if kind == "RSA":
            return cls(RSAKey.generate_key(2048), alg)
        if kind == "OKP":
            return cls(OKPKey.generate_key("Ed25519"), alg)
        return cls(ECKey.generate_key({"ES384": "P-384", "ES512": "P-521"}.get(alg or "", "P-256")), alg)

    def proof(
        self,
        method: str,
        url: str,
        *,
        access_token: str | None = None,
        nonce: str | None = None,
        header: dict[str, Any] | None = None,
        claims: dict[str, Any] | None = None,
        signer: tuple[Key, str] | None = None,
    ) -> str:
        """A proof for ``method`` and ``url``; ``header``/``claims`` override members (None drops one)."""
        full_header: dict[str, Any] = {"typ": "dpop+jwt", "alg": self.alg, "jwk": self.public_jwk, **(header or {})}
        full_claims: dict[str, Any] = {
            "jti": uuid.uuid4().hex,
            "htm": method,
            "htu": url,
            "iat": int(time.time()),
            **({"ath": ath_of(access_token)} if access_token is not None else {}),
            **({"nonce": nonce} if nonce is not None else {}),
            **(claims or {}),
        }
        key, alg = signer or (self.key, self.alg)
        return compact(
            {k: v for k, v in full_header.items() if v is not None},
            {k: v for k, v in full_claims.items() if v is not None},
            key,
            alg,
        )


def without_query(url: httpx2.URL) -> str:
    return str(url.copy_with(query=None, fragment=None))


class DPoPAuth:
    """Mixed in before an SDK OAuth provider; see the module docstring."""

    def __init__(self, *args: Any, dpop_key: DPoPKey | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.dpop_key = dpop_key or DPoPKey.generate()
        self.bound_tokens: set[str] = set()
        self.token_types: list[str] = []
        # The nonce each endpoint gave last, by URL: an authorization server and a resource on one origin
        # hand out different ones (RFC 9449 section 9).
        self.nonces: dict[str, str] = {}
        self.proofs: list[tuple[str, str]] = []  # (method, htu) of every proof sent
        self.nonce_retries = 0

    def _is_token_request(self, request: httpx2.Request) -> bool:
        return request.method == "POST" and without_query(request.url) == self._get_token_endpoint()  # type: ignore[attr-defined]

    def _prove(self, request: httpx2.Request) -> None:
        request.headers.pop("DPoP", None)
        htu = without_query(request.url)
        nonce = self.nonces.get(htu)
        if self._is_token_request(request):
            request.headers["DPoP"] = self.dpop_key.proof("POST", htu, nonce=nonce)
        else:
            scheme, _, token = request.headers.get("Authorization", "").partition(" ")
            if scheme.lower() not in ("bearer", "dpop") or token not in self.bound_tokens:
                return
            request.headers["Authorization"] = f"DPoP {token}"
            request.headers["DPoP"] = self.dpop_key.proof(request.method, htu, access_token=token, nonce=nonce)
        self.proofs.append((request.method, htu))

    async def _nonce_challenge(self, response: httpx2.Response) -> bool:
        nonce = response.headers.get("DPoP-Nonce")
        if nonce is None:
            return False
        self.nonces[without_query(response.request.url)] = nonce
        if response.status_code == 401:  # RFC 9449 section 9, a resource server
            return 'error="use_dpop_nonce"' in response.headers.get("WWW-Authenticate", "")
        if response.status_code == 400:  # section 8, an authorization server
            await response.aread()
            try:
                return bool(response.json().get("error") == "use_dpop_nonce")
            except ValueError:
                return False
        return False

    async def _as_bearer(self, response: httpx2.Response) -> httpx2.Response:
        """A DPoP token response, remembered as bound and shown to the SDK (which knows only Bearer) as Bearer."""
        if response.status_code != 200:
            return response
        body = json.loads(await response.aread())
        self.token_types.append(body.get("token_type", ""))
        if str(body.get("token_type", "")).lower() != "dpop":
            return response
        self.bound_tokens.add(body["access_token"])
        headers = {k: v for k, v in response.headers.items() if k.lower() not in ("content-length", "content-encoding")}
        return httpx2.Response(
            response.status_code,
            headers=headers,
            content=json.dumps({**body, "token_type": "Bearer"}).encode(),
            request=response.request,
        )

    async def _auth_flow(self, request: httpx2.Request) -> AsyncGenerator[httpx2.Request, httpx2.Response]:
        flow = super()._auth_flow(request)  # type: ignore[misc]
        try:
            outgoing = await flow.__anext__()
            while True:
                self._prove(outgoing)
                response = yield outgoing
                if await self._nonce_challenge(response):
                    self.nonce_retries += 1
                    self._prove(outgoing)
                    response = yield outgoing
                if self._is_token_request(outgoing):
                    response = await self._as_bearer(response)
                outgoing = await flow.asend(response)
        except StopAsyncIteration:
            return
        finally:
            await flow.aclose()


class DPoPOAuthClientProvider(DPoPAuth, OAuthClientProvider):
    """The SDK's authorization-code client (discovery, registration, PKCE, refresh) with DPoP."""


class DPoPClientCredentialsProvider(DPoPAuth, ClientCredentialsOAuthProvider):
    """The SDK's client credentials client with DPoP."""
