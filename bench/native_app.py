"""The reference: the same tools served by the SDK's own Starlette app with its built-in bearer authentication.

``gunicorn -k asgi bench.native_app:app`` or ``uvicorn bench.native_app:app``. The token verifier checks the
same RS256 JWT our server accepts (signature with a JWK Set imported once, iss, aud, exp, sub), the way an SDK
user would write one; the environment names the issuer, its keys and the audience (set by bench/run.py).
"""

from __future__ import annotations

import json
import os
import urllib.request

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.provider import TokenVerifier
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import MCPServer

from app.auth.scopes import ScopePolicy
from app.mcp_server import SERVER_NAME
from app.mcp_server import ScopedServer
from bench import streaming_tools
from flask_mcp_examples import register

ISSUER = os.environ["BENCH_ISSUER"]
AUDIENCE = os.environ["BENCH_AUDIENCE"]


class JWTVerifier(TokenVerifier):
    def __init__(self) -> None:
        with urllib.request.urlopen(os.environ["BENCH_JWKS_URI"], timeout=5) as response:  # noqa: S310 (loopback)
            self.keys = KeySet.import_key_set(json.load(response))
        self.claims = jwt.JWTClaimsRegistry(
            leeway=30,
            iss={"essential": True, "value": ISSUER},
            aud={"essential": True, "value": AUDIENCE},
            sub={"essential": True},
            exp={"essential": True},
        )

    async def verify_token(self, token: str) -> AccessToken | None:
        try:
            decoded = jwt.decode(token, self.keys, algorithms=["RS256"])
            self.claims.validate(decoded.claims)
        except (JoseError, ValueError):
            return None
        claims = decoded.claims
        return AccessToken(
            token=token,
            client_id=str(claims.get("client_id", "")),
            scopes=str(claims.get("scope", "")).split(),
            expires_at=int(claims["exp"]),
            resource=AUDIENCE,
            subject=str(claims["sub"]),
            claims=claims,
        )


server = MCPServer(
    SERVER_NAME,
    token_verifier=JWTVerifier(),
    auth=AuthSettings(issuer_url=ISSUER, resource_server_url=AUDIENCE, validate_token_resource=False),
)
# The example tools, as our server runs them by default (the provider also sets the instructions), and the
# benchmark's streaming tool, as bench/run.py gives them to ours through MCP_TOOLS.
database = os.environ["BENCH_DATABASE"]
scoped = ScopedServer(
    server,
    ScopePolicy(),
    sync_in_request_thread=False,
    instance_path=os.path.dirname(database),
    env={"MCP_DATABASE": database},
)
register(scoped)
streaming_tools.register(scoped)
app = server.streamable_http_app(stateless_http=True)
