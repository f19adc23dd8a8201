"""The caller as the verified token describes it."""

from __future__ import annotations

from typing import Any

import pytest

from app.auth.principal import Principal

ISSUER = "https://login.example.com"


def claims(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"iss": ISSUER, "sub": "alice", "aud": "https://mcp.example.com/mcp", "exp": 1_800_000_600}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


class TestFromClaims:
    def test_every_field(self) -> None:
        source = claims(client_id="cli", scope="todo:read todo:write", org_id="org-1", jti="j1")
        assert Principal.from_claims(source) == Principal(
            sub="alice",
            issuer=ISSUER,
            client_id="cli",
            scopes=("todo:read", "todo:write"),
            org_id="org-1",
            expires_at=1_800_000_600,
            claims=source,
        )

    @pytest.mark.parametrize(
        ("extra", "scopes"),
        [
            pytest.param({}, (), id="none"),
            pytest.param({"scope": "todo:read  todo:write "}, ("todo:read", "todo:write"), id="scope-string"),
            pytest.param({"scope": "b a b"}, ("b", "a"), id="scope-deduplicated-in-order"),
            pytest.param({"scp": "todo:read todo:write"}, ("todo:read", "todo:write"), id="scp-string"),
            pytest.param({"scp": ["todo:read", "todo:write"]}, ("todo:read", "todo:write"), id="scp-list"),
            pytest.param({"scp": ["a", 7, None, "b", "a"]}, ("a", "b"), id="scp-list-non-strings-dropped"),
            pytest.param({"permissions": ["read:todos"]}, ("read:todos",), id="permissions-list"),
            pytest.param(
                {"permissions": "read:todos write:todos"}, ("read:todos", "write:todos"), id="permissions-str"
            ),
            pytest.param(
                {"scope": "from-scope a", "scp": ["from-scp", "a"]},
                ("from-scope", "a", "from-scp"),
                id="union-in-order",
            ),
            pytest.param(
                {"scp": ["from-scp"], "permissions": ["from-permissions"]},
                ("from-scp", "from-permissions"),
                id="auth0-rbac-with-scp",
            ),
            pytest.param({"scope": 5, "scp": ["from-scp"]}, ("from-scp",), id="non-string-scope-skipped"),
            pytest.param({"scope": "", "scp": ["from-scp"]}, ("from-scp",), id="empty-scope-string"),
            pytest.param({"roles": ["Todo.Read"]}, (), id="roles-not-read-by-default"),
        ],
    )
    def test_scopes(self, extra: dict[str, Any], scopes: tuple[str, ...]) -> None:
        assert Principal.from_claims(claims(**extra)).scopes == scopes

    def test_configured_scope_claims(self) -> None:
        source = claims(scp="a", roles=["Todo.Read"])
        assert Principal.from_claims(source, ("scp", "roles")).scopes == ("a", "Todo.Read")

    @pytest.mark.parametrize(
        ("extra", "client_id"),
        [
            pytest.param({}, None, id="none"),
            pytest.param({"client_id": "c", "azp": "a", "appid": "p"}, "c", id="client-id-first"),
            pytest.param({"azp": "a", "appid": "p"}, "a", id="azp-fallback"),
            pytest.param({"appid": "p"}, "p", id="appid-fallback"),
            pytest.param({"client_id": "", "azp": "a"}, "a", id="empty-client-id-skipped"),
            pytest.param({"client_id": 5, "appid": "p"}, "p", id="non-string-client-id-skipped"),
        ],
    )
    def test_client_id(self, extra: dict[str, Any], client_id: str | None) -> None:
        assert Principal.from_claims(claims(**extra)).client_id == client_id

    @pytest.mark.parametrize(
        ("extra", "org_id"),
        [
            pytest.param({}, None, id="none"),
            pytest.param({"org_id": "o1", "organization_id": "o2"}, "o1", id="org-id-first"),
            pytest.param({"organization_id": "o2"}, "o2", id="organization-id-fallback"),
            pytest.param({"org_id": ["o1"]}, None, id="non-string"),
        ],
    )
    def test_org_id(self, extra: dict[str, Any], org_id: str | None) -> None:
        assert Principal.from_claims(claims(**extra)).org_id == org_id

    @pytest.mark.parametrize(
        ("exp", "expires_at"),
        [
            pytest.param(1_800_000_600, 1_800_000_600, id="int"),
            pytest.param(1_800_000_600.9, 1_800_000_600, id="float-truncated"),
            pytest.param(None, None, id="absent"),
            pytest.param("1800000600", None, id="string"),
            pytest.param(True, None, id="bool"),
        ],
    )
    def test_expires_at(self, exp: object, expires_at: int | None) -> None:
        assert Principal.from_claims(claims(exp=exp)).expires_at == expires_at

    def test_claims_are_copied(self) -> None:
        source = claims()
        principal = Principal.from_claims(source)
        source["sub"] = "mallory"
        assert principal.claims["sub"] == "alice"

    def test_key_is_issuer_and_subject(self) -> None:
        assert Principal.from_claims(claims()).key == (ISSUER, "alice")

    def test_public_view(self) -> None:
        principal = Principal.from_claims(claims(azp="cli", scp=["todo:read"], organization_id="org-2", secret="x"))
        assert principal.public_view() == {
            "sub": "alice",
            "client_id": "cli",
            "scopes": ["todo:read"],
            "issuer": ISSUER,
            "org_id": "org-2",
            "expires_at": 1_800_000_600,
        }
