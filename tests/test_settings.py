"""Settings: every variable validated, every refusal one line naming the variable."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from app.settings import DEV_RESOURCE_URL
from app.settings import IssuerConfig
from app.settings import ServedAddress
from app.settings import Settings
from app.settings import SettingsError
from tests.support.dpop import DEFAULT_ALGORITHMS

RESOURCE = "https://mcp.example.com/mcp"
ISSUER = "https://login.example.com/tenant"
PRODUCTION = {"MCP_RESOURCE_URL": RESOURCE, "MCP_ISSUER": ISSUER}
SECRET = "s" * 32
METRICS_TOKEN = "m" * 40
DEV_ISSUER = "http://127.0.0.1:5000/dev-issuer"
STATE_SECRET_REQUIRED = (
    "required when {workers} worker processes run: every worker must seal request state with the same secret "
    "(make one: python -c 'import secrets; print(secrets.token_urlsafe(48))')"
)


def production(**env: str) -> dict[str, str]:
    return {**PRODUCTION, **env}


def refusal(env: dict[str, str], *, workers: int | None = None) -> SettingsError:
    with pytest.raises(SettingsError) as caught:
        Settings.from_mapping(env, workers=workers)
    return caught.value


def assert_refused(error: SettingsError, variable: str, problem: str) -> None:
    assert error.variable == variable
    assert error.problem == problem
    assert str(error) == f"{variable}: {problem}"
    assert "\n" not in str(error)
    assert "\r" not in str(error)


class TestSettingsError:
    def test_is_a_value_error_reading_variable_colon_problem(self) -> None:
        error = SettingsError("MCP_ISSUER", "required")
        assert isinstance(error, ValueError)
        assert (error.variable, error.problem, str(error)) == ("MCP_ISSUER", "required", "MCP_ISSUER: required")


class TestProductionDefaults:
    def test_minimal_configuration_fills_in_every_default(self) -> None:
        assert Settings.from_mapping(PRODUCTION) == Settings(
            resource_url=RESOURCE,
            issuers=(IssuerConfig(ISSUER, None, (RESOURCE,)),),
            authorization_servers=(ISSUER,),
            scopes_supported=(),
            allowed_origins=(),
            token_profile="jwt",
            state_secret=None,
            tools=(),
            dev=False,
            resource_name="Flask MCP server",
            clock_leeway=30,
            jwks_ttl=3600,
            jwks_refetch_cooldown=30,
            scope_hierarchy=None,
            advertise_required_scopes=False,
            json_response=False,
            trusted_proxies=0,
            metrics_token=None,
            metrics_dir=None,
            workers=1,
            instance_path=None,
            dpop="allowed",
            dpop_algorithms=tuple(DEFAULT_ALGORITHMS),
            dpop_proof_window=60,
            dpop_nonce=False,
        )

    def test_every_variable_set(self) -> None:
        env = {
            "MCP_RESOURCE_URL": " https://mcp.example.com/api/mcp ",
            "MCP_ISSUER": ISSUER,
            "MCP_JWKS_URI": "https://login.example.com/tenant/keys",
            "MCP_AUDIENCE": "https://mcp.example.com/api/mcp, api://mcp",
            "MCP_AUTHORIZATION_SERVERS": "https://a.example.com, https://b.example.com/t",
            "MCP_SCOPES_SUPPORTED": "todo:read todo:write",
            "MCP_ALLOWED_ORIGINS": "https://App.Example.com, http://localhost:3000/",
            "MCP_TOKEN_PROFILE": "rfc9068",
            "MCP_STATE_SECRET": SECRET,
            "MCP_TOOLS": "notes_mcp:register, acme.weather.tools:register_all",
            "MCP_RESOURCE_NAME": "Todo server",
            "MCP_CLOCK_LEEWAY": "5",
            "MCP_JWKS_TTL": "600",
            "MCP_JWKS_REFETCH_COOLDOWN": "10",
            "MCP_SCOPE_HIERARCHY": "todo:admin=todo:write",
            "MCP_JSON_RESPONSE": "1",
            "MCP_TRUSTED_PROXIES": "1",
            "MCP_METRICS_TOKEN": METRICS_TOKEN,
            "PROMETHEUS_MULTIPROC_DIR": "/",
            "MCP_WORKERS": "4",
            "MCP_INSTANCE_PATH": "/srv/mcp/instance",
            "MCP_DPOP": "Required",
            "MCP_DPOP_ALGORITHMS": "ES256, Ed25519 ES256",
            "MCP_DPOP_PROOF_WINDOW": "120",
            "MCP_DPOP_NONCE": "1",
            "MCP_INSTANCE_NAME": "8000",
        }
        assert Settings.from_mapping(env) == Settings(
            resource_url="https://mcp.example.com/api/mcp",
            issuers=(
                IssuerConfig(
                    ISSUER, "https://login.example.com/tenant/keys", ("https://mcp.example.com/api/mcp", "api://mcp")
                ),
            ),
            authorization_servers=("https://a.example.com", "https://b.example.com/t"),
            scopes_supported=("todo:read", "todo:write"),
            allowed_origins=("https://app.example.com", "http://localhost:3000"),
            token_profile="rfc9068",
            state_secret=SECRET,
            tools=("notes_mcp:register", "acme.weather.tools:register_all"),
            dev=False,
            resource_name="Todo server",
            clock_leeway=5,
            jwks_ttl=600,
            jwks_refetch_cooldown=10,
            scope_hierarchy={"todo:admin": frozenset({"todo:write"})},
            json_response=True,
            trusted_proxies=1,
            metrics_token=METRICS_TOKEN,
            metrics_dir="/",
            workers=4,
            instance_path="/srv/mcp/instance",
            dpop="required",
            dpop_algorithms=("ES256", "Ed25519"),
            dpop_proof_window=120,
            dpop_nonce=True,
            instance_name="8000",
        )

    def test_workers_argument_wins_over_mcp_workers(self) -> None:
        settings = Settings.from_mapping(production(MCP_WORKERS="8", MCP_STATE_SECRET=SECRET), workers=3)
        assert settings.workers == 3


class TestRefusals:
    @pytest.mark.parametrize(
        ("env", "variable", "problem"),
        [
            pytest.param(
                {},
                "MCP_RESOURCE_URL",
                "required: the public URL of the MCP endpoint, e.g. https://mcp.example.com/mcp "
                "(or set MCP_DEV=1 for local development)",
                id="resource-missing",
            ),
            pytest.param(
                {"MCP_RESOURCE_URL": "   ", "MCP_ISSUER": ISSUER},
                "MCP_RESOURCE_URL",
                "required: the public URL of the MCP endpoint, e.g. https://mcp.example.com/mcp "
                "(or set MCP_DEV=1 for local development)",
                id="resource-blank",
            ),
            pytest.param(
                {"MCP_RESOURCE_URL": RESOURCE},
                "MCP_ISSUER",
                "required: the issuer URL of your authorization server, exactly as it appears in the tokens' "
                "iss claim (or set MCP_DEV=1 for local development)",
                id="issuer-missing",
            ),
            pytest.param(
                production(MCP_RESOURCE_URL="http://mcp.example.com/mcp"),
                "MCP_RESOURCE_URL",
                "must use https (plain http is only allowed for loopback hosts): 'http://mcp.example.com/mcp'",
                id="resource-plain-http",
            ),
            pytest.param(
                production(MCP_RESOURCE_URL="http://10.0.0.7/mcp"),
                "MCP_RESOURCE_URL",
                "must use https (plain http is only allowed for loopback hosts): 'http://10.0.0.7/mcp'",
                id="resource-plain-http-private-address",
            ),
            pytest.param(
                production(MCP_RESOURCE_URL="mcp.example.com/mcp"),
                "MCP_RESOURCE_URL",
                "must be an absolute https URL, not 'mcp.example.com/mcp'",
                id="resource-no-scheme",
            ),
            pytest.param(
                production(MCP_RESOURCE_URL="ftp://mcp.example.com/mcp"),
                "MCP_RESOURCE_URL",
                "must be an absolute https URL, not 'ftp://mcp.example.com/mcp'",
                id="resource-ftp",
            ),
            pytest.param(
                production(MCP_RESOURCE_URL="https:///mcp"),
                "MCP_RESOURCE_URL",
                "must be an absolute https URL, not 'https:///mcp'",
                id="resource-no-host",
            ),
            pytest.param(
                production(MCP_RESOURCE_URL="https://mcp.example.com:99999/mcp"),
                "MCP_RESOURCE_URL",
                "not a valid URL: 'https://mcp.example.com:99999/mcp' (Port out of range 0-65535)",
                id="resource-port-out-of-range",
            ),
            pytest.param(
                production(MCP_RESOURCE_URL="https://mcp.example.com/mcp#top"),
                "MCP_RESOURCE_URL",
                "must not carry a fragment: 'https://mcp.example.com/mcp#top'",
                id="resource-fragment",
            ),
            pytest.param(
                production(MCP_RESOURCE_URL="https://mcp.example.com/mcp#"),
                "MCP_RESOURCE_URL",
                "must not carry a query or a fragment (RFC 8707 section 2)",
                id="resource-empty-fragment",
            ),
            pytest.param(
                production(MCP_RESOURCE_URL="https://mcp.example.com/mcp?tenant=a"),
                "MCP_RESOURCE_URL",
                "must not carry a query or a fragment (RFC 8707 section 2)",
                id="resource-query",
            ),
            pytest.param(
                production(MCP_ISSUER="http://login.example.com"),
                "MCP_ISSUER",
                "must use https (plain http is only allowed for loopback hosts): 'http://login.example.com'",
                id="issuer-plain-http",
            ),
            pytest.param(
                production(MCP_ISSUER="login.example.com"),
                "MCP_ISSUER",
                "must be an absolute https URL, not 'login.example.com'",
                id="issuer-no-scheme",
            ),
            pytest.param(
                production(MCP_JWKS_URI="http://login.example.com/keys"),
                "MCP_JWKS_URI",
                "must use https (plain http is only allowed for loopback hosts): 'http://login.example.com/keys'",
                id="jwks-uri-plain-http",
            ),
            pytest.param(
                production(MCP_AUDIENCE="api://mcp, http://aud.example.com/mcp"),
                "MCP_AUDIENCE",
                "must use https (plain http is only allowed for loopback hosts): 'http://aud.example.com/mcp'",
                id="audience-plain-http",
            ),
            pytest.param(
                production(MCP_AUTHORIZATION_SERVERS="https://a.example.com, b.example.com"),
                "MCP_AUTHORIZATION_SERVERS",
                "must be an absolute https URL, not 'b.example.com'",
                id="authorization-server-not-a-url",
            ),
            pytest.param(
                production(MCP_AUTHORIZATION_SERVERS="http://a.example.com"),
                "MCP_AUTHORIZATION_SERVERS",
                "must use https (plain http is only allowed for loopback hosts): 'http://a.example.com'",
                id="authorization-server-plain-http",
            ),
            pytest.param(
                production(MCP_SCOPES_SUPPORTED='todo:read todo"write'),
                "MCP_SCOPES_SUPPORTED",
                "'todo\"write' is not a valid scope token (RFC 6749 section 3.3)",
                id="scope-with-quote",
            ),
            pytest.param(
                production(MCP_SCOPES_SUPPORTED="tödo"),
                "MCP_SCOPES_SUPPORTED",
                "'tödo' is not a valid scope token (RFC 6749 section 3.3)",
                id="scope-non-ascii",
            ),
            pytest.param(
                production(MCP_SCOPES_SUPPORTED="todo:read offline_access"),
                "MCP_SCOPES_SUPPORTED",
                "must not list offline_access (MCP authorization spec)",
                id="scope-offline-access",
            ),
            pytest.param(
                production(MCP_ALLOWED_ORIGINS="https://app.example.com/path"),
                "MCP_ALLOWED_ORIGINS",
                "'https://app.example.com/path' is not an origin like https://app.example.com",
                id="origin-with-path",
            ),
            pytest.param(
                production(MCP_ALLOWED_ORIGINS="app.example.com"),
                "MCP_ALLOWED_ORIGINS",
                "'app.example.com' is not an origin like https://app.example.com",
                id="origin-without-scheme",
            ),
            pytest.param(
                production(MCP_ALLOWED_ORIGINS="ftp://app.example.com"),
                "MCP_ALLOWED_ORIGINS",
                "'ftp://app.example.com' is not an origin like https://app.example.com",
                id="origin-ftp",
            ),
            pytest.param(
                production(MCP_TOKEN_PROFILE="opaque"),
                "MCP_TOKEN_PROFILE",
                "must be 'jwt' or 'rfc9068', not 'opaque'",
                id="profile-unknown",
            ),
            pytest.param(
                production(MCP_TOKEN_PROFILE="RFC9068"),
                "MCP_TOKEN_PROFILE",
                "must be 'jwt' or 'rfc9068', not 'RFC9068'",
                id="profile-case-sensitive",
            ),
            pytest.param(
                production(MCP_STATE_SECRET="s" * 31),
                "MCP_STATE_SECRET",
                "must be at least 32 characters (use a random value)",
                id="state-secret-short",
            ),
            pytest.param(
                production(MCP_WORKERS="2"),
                "MCP_STATE_SECRET",
                STATE_SECRET_REQUIRED.format(workers=2),
                id="state-secret-missing-with-workers",
            ),
            pytest.param(
                production(MCP_INSTANCE_PATH="instance"),
                "MCP_INSTANCE_PATH",
                "must be an absolute path, not 'instance'",
                id="instance-path-relative",
            ),
            pytest.param(
                production(MCP_INSTANCE_PATH="./instance"),
                "MCP_INSTANCE_PATH",
                "must be an absolute path, not './instance'",
                id="instance-path-dot-relative",
            ),
            pytest.param(
                {"MCP_DEV": "1", "MCP_RESOURCE_URL": RESOURCE},
                "MCP_RESOURCE_URL",
                "development mode (MCP_DEV=1) only serves loopback URLs, not 'https://mcp.example.com/mcp'",
                id="dev-public-resource",
            ),
            pytest.param(
                {"MCP_DEV": "1", "MCP_RESOURCE_URL": "http://192.168.1.5:5000/mcp"},
                "MCP_RESOURCE_URL",
                "must use https (plain http is only allowed for loopback hosts): 'http://192.168.1.5:5000/mcp'",
                id="dev-plain-http-lan-resource",
            ),
            pytest.param(
                {"MCP_DEV": "1", "MCP_ISSUER": ISSUER},
                "MCP_ISSUER",
                "must be unset in development mode: the server is its own issuer at http://127.0.0.1:5000/dev-issuer",
                id="dev-issuer-set",
            ),
            pytest.param(
                {"MCP_DEV": "1", "MCP_RESOURCE_URL": "http://localhost:8000/mcp", "MCP_ISSUER": ISSUER},
                "MCP_ISSUER",
                "must be unset in development mode: the server is its own issuer at http://localhost:8000/dev-issuer",
                id="dev-issuer-set-custom-port",
            ),
            pytest.param(
                {"MCP_DEV": "1", "MCP_RESOURCE_URL": "http://127.0.0.1:5000/mcp?x=1"},
                "MCP_RESOURCE_URL",
                "must not carry a query or a fragment (RFC 8707 section 2)",
                id="dev-resource-query",
            ),
        ],
    )
    def test_refusal_names_the_variable_in_one_line(self, env: dict[str, str], variable: str, problem: str) -> None:
        assert_refused(refusal(env), variable, problem)

    def test_workers_argument_requires_a_state_secret(self) -> None:
        assert_refused(refusal(PRODUCTION, workers=3), "MCP_STATE_SECRET", STATE_SECRET_REQUIRED.format(workers=3))


class TestDevelopmentMode:
    def test_defaults(self) -> None:
        assert Settings.from_mapping({"MCP_DEV": "1"}) == Settings(
            resource_url="http://127.0.0.1:5000/mcp",
            issuers=(IssuerConfig(DEV_ISSUER, None, ("http://127.0.0.1:5000/mcp",)),),
            authorization_servers=(DEV_ISSUER,),
            # create_app fills in what the tool providers ask for.
            scopes_supported=(),
            advertise_required_scopes=True,
            dev=True,
            scope_hierarchy=None,
            dev_token_lifetime=600,
        )
        assert DEV_RESOURCE_URL == "http://127.0.0.1:5000/mcp"

    @pytest.mark.parametrize(
        ("served", "env", "resource"),
        [
            pytest.param(ServedAddress("127.0.0.1", 5077), {}, "http://127.0.0.1:5077/mcp", id="flask-run-port"),
            pytest.param(ServedAddress("localhost", 8080), {}, "http://localhost:8080/mcp", id="localhost"),
            pytest.param(ServedAddress("::1", 5001), {}, "http://[::1]:5001/mcp", id="ipv6-loopback"),
            pytest.param(ServedAddress("127.0.0.1", 5443, https=True), {}, "https://127.0.0.1:5443/mcp", id="cert"),
            # In a container flask run binds every interface; the server still answers loopback hosts only.
            pytest.param(ServedAddress("0.0.0.0", 5000), {}, "http://127.0.0.1:5000/mcp", id="all-interfaces"),  # noqa: S104
            pytest.param(None, {"FLASK_RUN_PORT": "5099"}, "http://127.0.0.1:5099/mcp", id="flask-run-port-variable"),
            pytest.param(
                ServedAddress("127.0.0.1", 5077),
                {"FLASK_RUN_PORT": "5099"},
                "http://127.0.0.1:5077/mcp",
                id="the-served-port-wins",
            ),
            pytest.param(
                ServedAddress("127.0.0.1", 5077),
                {"MCP_RESOURCE_URL": "http://localhost:9000/mcp"},
                "http://localhost:9000/mcp",
                id="mcp-resource-url-wins",
            ),
        ],
    )
    def test_every_url_follows_the_port_served(
        self, served: ServedAddress | None, env: dict[str, str], resource: str
    ) -> None:
        settings = Settings.from_mapping({"MCP_DEV": "1", **env}, served=served)
        origin = resource.removesuffix("/mcp")
        assert settings.resource_url == resource
        assert settings.issuer == origin + "/dev-issuer"
        assert settings.audiences == (resource,)
        assert settings.authorization_servers == (origin + "/dev-issuer",)

    def test_the_served_port_does_not_matter_in_production(self) -> None:
        assert Settings.from_mapping(PRODUCTION, served=ServedAddress("127.0.0.1", 5077)).resource_url == RESOURCE

    def test_a_random_port_cannot_be_advertised(self) -> None:
        with pytest.raises(SettingsError) as caught:
            Settings.from_mapping({"MCP_DEV": "1"}, served=ServedAddress("127.0.0.1", 0))
        assert_refused(
            caught.value,
            "MCP_RESOURCE_URL",
            "flask run --port 0 listens on a port chosen at random, which clients cannot be told: "
            "give a port, or set MCP_RESOURCE_URL",
        )

    def test_a_bad_flask_run_port(self) -> None:
        assert_refused(
            refusal({"MCP_DEV": "1", "FLASK_RUN_PORT": "http"}), "FLASK_RUN_PORT", "must be a whole number, not 'http'"
        )

    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            pytest.param("todo:read", ("todo:read",), id="one-scope"),
            pytest.param("", (), id="empty-means-none"),
        ],
    )
    def test_scopes_supported_can_be_narrowed(self, value: str, expected: tuple[str, ...]) -> None:
        settings = Settings.from_mapping({"MCP_DEV": "1", "MCP_SCOPES_SUPPORTED": value})
        assert settings.scopes_supported == expected

    def test_token_lifetime(self) -> None:
        assert Settings.from_mapping({"MCP_DEV": "1", "MCP_DEV_TOKEN_LIFETIME": "5"}).dev_token_lifetime == 5
        assert_refused(
            refusal({"MCP_DEV": "1", "MCP_DEV_TOKEN_LIFETIME": "0"}),
            "MCP_DEV_TOKEN_LIFETIME",
            "must be between 1 and 86400, not 0",
        )

    @pytest.mark.parametrize(
        ("resource", "issuer"),
        [
            pytest.param("http://localhost:8000/mcp", "http://localhost:8000/dev-issuer", id="localhost"),
            pytest.param("http://[::1]:5000/mcp", "http://[::1]:5000/dev-issuer", id="ipv6-loopback"),
            pytest.param("http://127.0.0.1/api/mcp", "http://127.0.0.1/dev-issuer", id="no-port-longer-path"),
            pytest.param("https://localhost:8443/mcp", "https://localhost:8443/dev-issuer", id="https-loopback"),
        ],
    )
    def test_issuer_lives_on_the_resource_origin(self, resource: str, issuer: str) -> None:
        settings = Settings.from_mapping({"MCP_DEV": "1", "MCP_RESOURCE_URL": resource})
        assert (settings.resource_url, settings.issuer) == (resource, issuer)
        assert settings.audiences == (resource,)
        assert settings.authorization_servers == (issuer,)

    def test_many_workers_need_no_state_secret(self) -> None:
        settings = Settings.from_mapping({"MCP_DEV": "1", "MCP_WORKERS": "4"})
        assert (settings.workers, settings.state_secret) == (4, None)

    def test_short_state_secret_is_still_refused(self) -> None:
        error = refusal({"MCP_DEV": "1", "MCP_STATE_SECRET": "short"})
        assert_refused(error, "MCP_STATE_SECRET", "must be at least 32 characters (use a random value)")


class TestUrls:
    @pytest.mark.parametrize(
        "url",
        [
            pytest.param("http://127.0.0.1:8000/mcp", id="ipv4-loopback"),
            pytest.param("http://localhost/mcp", id="localhost"),
            pytest.param("http://LOCALHOST:9000/mcp", id="localhost-uppercase"),
            pytest.param("http://[::1]:8000/mcp", id="ipv6-loopback"),
            pytest.param("http://127.1.2.3/mcp", id="ipv4-loopback-range"),
            pytest.param("https://mcp.example.com/mcp", id="https"),
            pytest.param("HTTPS://MCP.EXAMPLE.COM/mcp", id="https-uppercase"),
        ],
    )
    def test_plain_http_only_for_loopback(self, url: str) -> None:
        settings = Settings.from_mapping({"MCP_RESOURCE_URL": url, "MCP_ISSUER": url, "MCP_JWKS_URI": url})
        assert (settings.resource_url, settings.issuer, settings.jwks_uri) == (url, url, url)

    def test_audience_defaults_to_the_resource_url(self) -> None:
        assert Settings.from_mapping(PRODUCTION).audiences == (RESOURCE,)

    def test_opaque_audiences_are_allowed(self) -> None:
        guid = "6e74172b-be56-4843-9ff4-e66a39bb12e3"
        settings = Settings.from_mapping(production(MCP_AUDIENCE=f"{guid}, api://{guid} ,{RESOURCE},"))
        assert settings.audiences == (guid, f"api://{guid}", RESOURCE)

    def test_authorization_servers_default_to_the_issuer(self) -> None:
        assert Settings.from_mapping(PRODUCTION).authorization_servers == (ISSUER,)

    def test_authorization_servers_list(self) -> None:
        settings = Settings.from_mapping(production(MCP_AUTHORIZATION_SERVERS=" https://a.example.com ,, https://b"))
        assert settings.authorization_servers == ("https://a.example.com", "https://b")

    def test_allowed_origins_are_lower_cased_without_trailing_slash(self) -> None:
        settings = Settings.from_mapping(production(MCP_ALLOWED_ORIGINS="HTTPS://App.Example.com/,http://[::1]:3000"))
        assert settings.allowed_origins == ("https://app.example.com", "http://[::1]:3000")

    @pytest.mark.parametrize(
        ("resource", "endpoint_path", "public_origin"),
        [
            pytest.param("https://mcp.example.com/mcp", "/mcp", "https://mcp.example.com", id="mcp"),
            pytest.param("https://mcp.example.com/mcp/", "/mcp", "https://mcp.example.com", id="mcp-slash"),
            pytest.param("https://mcp.example.com", "/", "https://mcp.example.com", id="root"),
            pytest.param("https://mcp.example.com/", "/", "https://mcp.example.com", id="root-slash"),
            pytest.param("https://h.example.com:8443/a/b/mcp", "/a/b/mcp", "https://h.example.com:8443", id="nested"),
        ],
    )
    def test_endpoint_path_and_public_origin(self, resource: str, endpoint_path: str, public_origin: str) -> None:
        settings = Settings.from_mapping(production(MCP_RESOURCE_URL=resource))
        assert settings.endpoint_path == endpoint_path
        assert settings.public_origin == public_origin


class TestScopes:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            pytest.param("", (), id="empty"),
            pytest.param("todo:read todo:write", ("todo:read", "todo:write"), id="spaces"),
            pytest.param("todo:read,todo:write", ("todo:read", "todo:write"), id="commas"),
            pytest.param(
                " todo:read ,  todo:write\ttodo:delete ", ("todo:read", "todo:write", "todo:delete"), id="mix"
            ),
            pytest.param("https://graph.example.com/.default", ("https://graph.example.com/.default",), id="url-scope"),
        ],
    )
    def test_scopes_supported(self, value: str, expected: tuple[str, ...]) -> None:
        assert Settings.from_mapping(production(MCP_SCOPES_SUPPORTED=value)).scopes_supported == expected

    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            pytest.param("", {}, id="empty-disables"),
            pytest.param("  ;  ", {}, id="only-separators"),
            pytest.param("todo:write=todo:read", {"todo:write": frozenset({"todo:read"})}, id="default-form"),
            pytest.param(
                "todo:admin=todo:write todo:delete; todo:write=todo:read",
                {
                    "todo:admin": frozenset({"todo:write", "todo:delete"}),
                    "todo:write": frozenset({"todo:read"}),
                },
                id="several-entries",
            ),
            pytest.param("a=b, c=d", {"a": frozenset({"b"}), "c": frozenset({"d"})}, id="comma-separated"),
            pytest.param("a=b; a=c;", {"a": frozenset({"b", "c"})}, id="repeated-broad-merges"),
            pytest.param(" a = b  c ", {"a": frozenset({"b", "c"})}, id="whitespace"),
        ],
    )
    def test_scope_hierarchy(self, value: str, expected: dict[str, frozenset[str]]) -> None:
        assert Settings.from_mapping(production(MCP_SCOPE_HIERARCHY=value)).scope_hierarchy == expected

    def test_unset_scope_hierarchy_leaves_it_to_the_tools(self) -> None:
        assert Settings.from_mapping(PRODUCTION).scope_hierarchy is None

    @pytest.mark.parametrize(
        ("value", "problem"),
        [
            pytest.param(
                "todo:admin",
                "entry 'todo:admin' must look like 'broad=narrow1 narrow2' (entries separated by ';')",
                id="no-equals",
            ),
            pytest.param(
                "=todo:read",
                "entry '=todo:read' must look like 'broad=narrow1 narrow2' (entries separated by ';')",
                id="no-broad",
            ),
            pytest.param(
                "a=b; todo:admin=  ",
                "entry 'todo:admin=' must look like 'broad=narrow1 narrow2' (entries separated by ';')",
                id="no-narrow",
            ),
            pytest.param(
                'ad"min=todo:read', "'ad\"min' is not a valid scope token (RFC 6749 section 3.3)", id="bad-broad"
            ),
            pytest.param("admin=tödo", "'tödo' is not a valid scope token (RFC 6749 section 3.3)", id="bad-narrow"),
        ],
    )
    def test_bad_scope_hierarchy(self, value: str, problem: str) -> None:
        assert_refused(refusal(production(MCP_SCOPE_HIERARCHY=value)), "MCP_SCOPE_HIERARCHY", problem)


class TestTools:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            pytest.param("", (), id="unset"),
            pytest.param("notes_mcp:register", ("notes_mcp:register",), id="one"),
            pytest.param(
                " notes_mcp:register , acme.tools.weather:register_all ",
                ("notes_mcp:register", "acme.tools.weather:register_all"),
                id="comma-list",
            ),
            pytest.param("acme.tools.weather.register", ("acme.tools.weather.register",), id="dotted"),
            pytest.param("acme:Tools.register", ("acme:Tools.register",), id="attribute-path"),
        ],
    )
    def test_import_paths(self, value: str, expected: tuple[str, ...]) -> None:
        assert Settings.from_mapping(production(MCP_TOOLS=value)).tools == expected

    @pytest.mark.parametrize(
        "value",
        [
            pytest.param("notes mcp:register", id="space"),
            pytest.param("notes_mcp:", id="no-function"),
            pytest.param(":register", id="no-module"),
            pytest.param("notes_mcp:register:again", id="two-colons"),
            pytest.param("notes-mcp:register", id="dash"),
            pytest.param("./notes.py", id="a-file"),
        ],
    )
    def test_not_an_import_path(self, value: str) -> None:
        assert_refused(
            refusal(production(MCP_TOOLS=value)),
            "MCP_TOOLS",
            f"{value!r} is not an import path like package.module:function (comma-separated)",
        )

    def test_listed_twice(self) -> None:
        assert_refused(
            refusal(production(MCP_TOOLS="notes_mcp:register, other:register, notes_mcp:register")),
            "MCP_TOOLS",
            "lists 'notes_mcp:register' twice",
        )


class TestEnviron:
    def test_holds_every_variable_but_is_never_printed_or_compared(self) -> None:
        secret = "x" * 40
        settings = Settings.from_mapping(production(NOTES_API_KEY=secret))
        assert settings.environ["NOTES_API_KEY"] == secret
        assert secret not in repr(settings)
        assert settings == Settings.from_mapping(PRODUCTION)

    def test_is_read_only(self) -> None:
        settings = Settings.from_mapping(PRODUCTION)
        with pytest.raises(TypeError):
            settings.environ["MCP_ISSUER"] = "https://evil.example"  # type: ignore[index]


class TestDPoP:
    @pytest.mark.parametrize("mode", ["off", "allowed", "required", " OFF "])
    def test_modes(self, mode: str) -> None:
        assert Settings.from_mapping(production(MCP_DPOP=mode)).dpop == mode.strip().lower()

    @pytest.mark.parametrize(
        ("env", "variable", "problem"),
        [
            pytest.param({"MCP_DPOP": "on"}, "MCP_DPOP", "must be off, allowed or required, not 'on'", id="not a mode"),
            pytest.param(
                {"MCP_DPOP_ALGORITHMS": "ES256 HS256"},
                "MCP_DPOP_ALGORITHMS",
                "'HS256' is not an asymmetric JWS algorithm (RFC 9449 section 4.2); choose from ES256 ES384 ES512 "
                "Ed25519 Ed448 EdDSA PS256 PS384 PS512 RS256 RS384 RS512",
                id="symmetric",
            ),
            pytest.param(
                {"MCP_DPOP_ALGORITHMS": "none"},
                "MCP_DPOP_ALGORITHMS",
                "'none' is not an asymmetric JWS algorithm (RFC 9449 section 4.2); choose from ES256 ES384 ES512 "
                "Ed25519 Ed448 EdDSA PS256 PS384 PS512 RS256 RS384 RS512",
                id="none",
            ),
            pytest.param(
                {"MCP_DPOP_PROOF_WINDOW": "4"}, "MCP_DPOP_PROOF_WINDOW", "must be between 5 and 600, not 4", id="short"
            ),
            pytest.param(
                {"MCP_DPOP_PROOF_WINDOW": "601"},
                "MCP_DPOP_PROOF_WINDOW",
                "must be between 5 and 600, not 601",
                id="long",
            ),
            pytest.param({"MCP_DPOP_NONCE": "maybe"}, "MCP_DPOP_NONCE", "must be 1 or 0, not 'maybe'", id="nonce"),
        ],
    )
    def test_refused(self, env: dict[str, str], variable: str, problem: str) -> None:
        error = refusal(production(**env))
        assert_refused(error, variable, problem)
        assert "\n" not in str(error)


class TestStateSecret:
    def test_exactly_32_characters_is_enough(self) -> None:
        assert Settings.from_mapping(production(MCP_STATE_SECRET=" " + SECRET + " ")).state_secret == SECRET

    def test_not_required_for_one_worker(self) -> None:
        assert Settings.from_mapping(production(MCP_WORKERS="1")).state_secret is None

    def test_many_workers_with_a_secret(self) -> None:
        settings = Settings.from_mapping(production(MCP_STATE_SECRET=SECRET), workers=5)
        assert (settings.workers, settings.state_secret) == (5, SECRET)


class TestBooleans:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            pytest.param("1", True, id="1"),
            pytest.param("true", True, id="true"),
            pytest.param("TRUE", True, id="TRUE"),
            pytest.param("yes", True, id="yes"),
            pytest.param("on", True, id="on"),
            pytest.param(" 1 ", True, id="padded-1"),
            pytest.param("0", False, id="0"),
            pytest.param("false", False, id="false"),
            pytest.param("False", False, id="False"),
            pytest.param("no", False, id="no"),
            pytest.param("off", False, id="off"),
            pytest.param("", False, id="empty"),
            pytest.param("  ", False, id="blank"),
        ],
    )
    def test_values(self, value: str, expected: bool) -> None:
        assert Settings.from_mapping(production(MCP_JSON_RESPONSE=value)).json_response is expected

    @pytest.mark.parametrize(
        ("variable", "value", "problem"),
        [
            pytest.param("MCP_JSON_RESPONSE", "2", "must be 1 or 0, not '2'", id="json-response-2"),
            pytest.param("MCP_JSON_RESPONSE", "Maybe", "must be 1 or 0, not 'maybe'", id="json-response-maybe"),
            pytest.param("MCP_DEV", "y", "must be 1 or 0, not 'y'", id="dev-y"),
            pytest.param("MCP_DEV", "enabled", "must be 1 or 0, not 'enabled'", id="dev-enabled"),
        ],
    )
    def test_bad_values(self, variable: str, value: str, problem: str) -> None:
        assert_refused(refusal(production(**{variable: value})), variable, problem)


class TestIntegers:
    @pytest.mark.parametrize(
        ("variable", "value", "attribute", "expected"),
        [
            pytest.param("MCP_CLOCK_LEEWAY", "0", "clock_leeway", 0, id="leeway-min"),
            pytest.param("MCP_CLOCK_LEEWAY", "300", "clock_leeway", 300, id="leeway-max"),
            pytest.param("MCP_CLOCK_LEEWAY", " 45 ", "clock_leeway", 45, id="leeway-padded"),
            pytest.param("MCP_CLOCK_LEEWAY", "", "clock_leeway", 30, id="leeway-default"),
            pytest.param("MCP_JWKS_TTL", "60", "jwks_ttl", 60, id="ttl-min"),
            pytest.param("MCP_JWKS_TTL", "86400", "jwks_ttl", 86400, id="ttl-large"),
            pytest.param("MCP_JWKS_REFETCH_COOLDOWN", "1", "jwks_refetch_cooldown", 1, id="cooldown-min"),
            pytest.param("MCP_JWKS_REFETCH_COOLDOWN", "3600", "jwks_refetch_cooldown", 3600, id="cooldown-max"),
            pytest.param("MCP_TRUSTED_PROXIES", "0", "trusted_proxies", 0, id="proxies-min"),
            pytest.param("MCP_TRUSTED_PROXIES", "5", "trusted_proxies", 5, id="proxies-max"),
            pytest.param("MCP_WORKERS", "1", "workers", 1, id="workers-min"),
        ],
    )
    def test_accepted(self, variable: str, value: str, attribute: str, expected: int) -> None:
        assert getattr(Settings.from_mapping(production(**{variable: value})), attribute) == expected

    @pytest.mark.parametrize(
        ("variable", "value", "problem"),
        [
            pytest.param("MCP_CLOCK_LEEWAY", "301", "must be between 0 and 300, not 301", id="leeway-above"),
            pytest.param("MCP_CLOCK_LEEWAY", "-1", "must be between 0 and 300, not -1", id="leeway-negative"),
            pytest.param("MCP_CLOCK_LEEWAY", "ten", "must be a whole number, not 'ten'", id="leeway-word"),
            pytest.param("MCP_CLOCK_LEEWAY", "1.5", "must be a whole number, not '1.5'", id="leeway-fraction"),
            pytest.param("MCP_JWKS_TTL", "59", "must be at least 60, not 59", id="ttl-below"),
            pytest.param("MCP_JWKS_TTL", "1h", "must be a whole number, not '1h'", id="ttl-unit"),
            pytest.param("MCP_JWKS_REFETCH_COOLDOWN", "0", "must be between 1 and 3600, not 0", id="cooldown-zero"),
            pytest.param(
                "MCP_JWKS_REFETCH_COOLDOWN", "3601", "must be between 1 and 3600, not 3601", id="cooldown-above"
            ),
            pytest.param("MCP_TRUSTED_PROXIES", "6", "must be between 0 and 5, not 6", id="proxies-above"),
            pytest.param("MCP_WORKERS", "0", "must be at least 1, not 0", id="workers-zero"),
            pytest.param("MCP_WORKERS", "four", "must be a whole number, not 'four'", id="workers-word"),
        ],
    )
    def test_refused(self, variable: str, value: str, problem: str) -> None:
        assert_refused(refusal(production(**{variable: value})), variable, problem)


class TestCaps:
    def test_defaults(self) -> None:
        settings = Settings.from_mapping(production())
        assert (settings.cap_in_flight, settings.cap_streams, settings.cap_sessions) == (32, 8, 64)
        assert settings.stream_lifetime == 1800

    def test_rate_limits_off_leaves_the_caps_on(self) -> None:
        settings = Settings.from_mapping(production(MCP_RATE_LIMIT="off"))
        assert settings.rate_limit is None
        assert (settings.cap_in_flight, settings.cap_streams, settings.cap_sessions) == (32, 8, 64)

    @pytest.mark.parametrize(
        ("variable", "attribute"),
        [
            ("MCP_CAP_IN_FLIGHT", "cap_in_flight"),
            ("MCP_CAP_STREAMS", "cap_streams"),
            ("MCP_CAP_SESSIONS", "cap_sessions"),
            ("MCP_STREAM_LIFETIME", "stream_lifetime"),
        ],
    )
    def test_each_has_its_own_off(self, variable: str, attribute: str) -> None:
        assert getattr(Settings.from_mapping(production(**{variable: "off"})), attribute) is None
        assert getattr(Settings.from_mapping(production(**{variable: "OFF"})), attribute) is None
        assert getattr(Settings.from_mapping(production(**{variable: "5"})), attribute) == 5

    @pytest.mark.parametrize(
        ("variable", "value", "problem"),
        [
            pytest.param("MCP_CAP_IN_FLIGHT", "0", "must be between 1 and 100000, not 0 (or off)", id="zero"),
            pytest.param("MCP_CAP_STREAMS", "many", "must be a whole number, not 'many' (or off)", id="word"),
            pytest.param("MCP_CAP_SESSIONS", "-3", "must be between 1 and 100000, not -3 (or off)", id="negative"),
            pytest.param(
                "MCP_STREAM_LIFETIME", "86401", "must be between 1 and 86400, not 86401 (or off)", id="lifetime-long"
            ),
        ],
    )
    def test_refused(self, variable: str, value: str, problem: str) -> None:
        assert_refused(refusal(production(**{variable: value})), variable, problem)


class TestMetrics:
    @pytest.mark.parametrize(
        ("variable", "value", "problem"),
        [
            pytest.param(
                "MCP_METRICS_TOKEN",
                "x" * 31,
                "must be at least 32 printable characters (use a random value)",
                id="token-short",
            ),
            pytest.param(
                "MCP_METRICS_TOKEN",
                "x" * 32 + "\x07",
                "must be at least 32 printable characters (use a random value)",
                id="token-control",
            ),
            pytest.param(
                "PROMETHEUS_MULTIPROC_DIR", "metrics", "must be an absolute path, not 'metrics'", id="dir-relative"
            ),
            pytest.param(
                "PROMETHEUS_MULTIPROC_DIR",
                "/nonexistent/metrics",
                "'/nonexistent/metrics' is not a directory",
                id="dir-missing",
            ),
        ],
    )
    def test_refused(self, variable: str, value: str, problem: str) -> None:
        assert_refused(refusal(production(**{variable: value})), variable, problem)

    def test_existing_directory(self, tmp_path: Path) -> None:
        assert Settings.from_mapping(production(PROMETHEUS_MULTIPROC_DIR=str(tmp_path))).metrics_dir == str(tmp_path)


class TestInstancePath:
    def test_absolute_path(self, tmp_path: Path) -> None:
        assert Settings.from_mapping(production(MCP_INSTANCE_PATH=str(tmp_path))).instance_path == str(tmp_path)

    def test_blank_means_unset(self) -> None:
        assert Settings.from_mapping(production(MCP_INSTANCE_PATH="  ")).instance_path is None


class TestFromEnv:
    def test_reads_the_dotenv_file(self, tmp_path: Path) -> None:
        dotenv = tmp_path / ".env"
        dotenv.write_text(
            "# production\n"
            f"MCP_RESOURCE_URL={RESOURCE}\n"
            f"MCP_ISSUER='{ISSUER}'\n"
            'MCP_RESOURCE_NAME="From the file"\n'
            "NOTES_DATABASE=/srv/notes.sqlite3\n"
            "NOTES_BACKUP\n"
        )
        settings = Settings.from_env({"NOTES_TOKEN": "from-the-environment"}, dotenv_path=dotenv)
        assert (settings.resource_url, settings.issuer) == (RESOURCE, ISSUER)
        assert settings.resource_name == "From the file"
        # Tool providers read their own variables here, from the file as from the environment.
        assert settings.environ == {
            "MCP_RESOURCE_URL": RESOURCE,
            "MCP_ISSUER": ISSUER,
            "MCP_RESOURCE_NAME": "From the file",
            "NOTES_DATABASE": "/srv/notes.sqlite3",
            "NOTES_TOKEN": "from-the-environment",
        }

    def test_the_environment_wins_over_the_file(self, tmp_path: Path) -> None:
        dotenv = tmp_path / ".env"
        dotenv.write_text(f"MCP_RESOURCE_URL={RESOURCE}\nMCP_ISSUER={ISSUER}\nMCP_RESOURCE_NAME=From the file\n")
        settings = Settings.from_env({"MCP_RESOURCE_NAME": "From the environment"}, dotenv_path=dotenv)
        assert settings.resource_name == "From the environment"
        assert settings.issuer == ISSUER

    def test_a_missing_file_is_ignored(self, tmp_path: Path) -> None:
        settings = Settings.from_env(PRODUCTION, dotenv_path=tmp_path / "absent.env")
        assert settings.resource_url == RESOURCE

    def test_no_dotenv_path_reads_no_file(self, tmp_path: Path) -> None:
        (tmp_path / ".env").write_text(f"MCP_RESOURCE_URL={RESOURCE}\nMCP_ISSUER={ISSUER}\n")
        with pytest.raises(SettingsError) as caught:
            Settings.from_env({}, dotenv_path=None)
        assert caught.value.variable == "MCP_RESOURCE_URL"

    def test_defaults_to_the_process_environment(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        for name in [name for name in os.environ if name.startswith("MCP_")]:
            monkeypatch.delenv(name)
        monkeypatch.setenv("MCP_RESOURCE_URL", RESOURCE)
        monkeypatch.setenv("MCP_ISSUER", ISSUER)
        monkeypatch.setenv("MCP_STATE_SECRET", SECRET)
        settings = Settings.from_env(dotenv_path=tmp_path / "absent.env", workers=2)
        assert (settings.resource_url, settings.issuer, settings.workers) == (RESOURCE, ISSUER, 2)


class TestStateful:
    def test_one_worker(self) -> None:
        settings = Settings.from_mapping({"MCP_DEV": "1", "MCP_STATEFUL": "1"}, workers=1)
        assert settings.stateful is True

    def test_refused_with_several_workers(self) -> None:
        with pytest.raises(SettingsError) as caught:
            Settings.from_mapping({"MCP_DEV": "1", "MCP_STATEFUL": "1"}, workers=2)
        assert caught.value.variable == "MCP_STATEFUL"
        assert str(caught.value) == (
            "MCP_STATEFUL: stateful mode keeps sessions in one process: run exactly one worker (MCP_WORKERS=1), not 2"
        )

    def test_sessions_resume_from_memory_by_default(self) -> None:
        settings = Settings.from_mapping({"MCP_DEV": "1", "MCP_STATEFUL": "1"})
        assert (settings.legacy_sse, settings.instance_name) == (False, None)
        assert (settings.event_store, settings.event_store_max_events, settings.event_store_max_age) == (
            "memory://",
            1000,
            300,
        )
        assert settings.sse_retry_ms == 1000

    def test_every_stateful_variable(self) -> None:
        settings = Settings.from_mapping(
            {
                "MCP_DEV": "1",
                "MCP_STATEFUL": "1",
                "MCP_LEGACY_SSE": "1",
                "MCP_EVENT_STORE": " redis://127.0.0.1:6379/2 ",
                "MCP_EVENT_STORE_MAX_EVENTS": "50",
                "MCP_EVENT_STORE_MAX_AGE": "60",
                "MCP_SSE_RETRY_MS": "500",
                "MCP_INSTANCE_NAME": "mcp-a1",
            }
        )
        assert (settings.legacy_sse, settings.instance_name, settings.event_store) == (
            True,
            "mcp-a1",
            "redis://127.0.0.1:6379/2",
        )
        assert (settings.event_store_max_events, settings.event_store_max_age, settings.sse_retry_ms) == (50, 60, 500)

    def test_the_event_store_can_be_off(self) -> None:
        assert (
            Settings.from_mapping({"MCP_DEV": "1", "MCP_STATEFUL": "1", "MCP_EVENT_STORE": "off"}).event_store is None
        )

    def test_stateless_has_no_event_store_and_may_carry_an_instance_name(self) -> None:
        settings = Settings.from_mapping({"MCP_DEV": "1", "MCP_INSTANCE_NAME": "8001"})
        assert (settings.event_store, settings.instance_name) == (None, "8001")

    @pytest.mark.parametrize(
        ("env", "variable", "problem"),
        [
            pytest.param(
                {"MCP_LEGACY_SSE": "1"},
                "MCP_LEGACY_SSE",
                "needs stateful mode (MCP_STATEFUL=1): an HTTP+SSE session lives in the one process holding its stream",
                id="legacy-sse-stateless",
            ),
            pytest.param(
                {"MCP_EVENT_STORE": "memory://"},
                "MCP_EVENT_STORE",
                "needs stateful mode (MCP_STATEFUL=1): stateless requests have no stream to resume",
                id="event-store-stateless",
            ),
            pytest.param(
                {"MCP_STATEFUL": "1", "MCP_EVENT_STORE": "memcached://x"},
                "MCP_EVENT_STORE",
                "must be memory://, a redis:// URL or off, not 'memcached://x'",
                id="event-store-scheme",
            ),
            pytest.param(
                {"MCP_STATEFUL": "1", "MCP_EVENT_STORE": "redis://"},
                "MCP_EVENT_STORE",
                "must be memory://, a redis:// URL or off, not 'redis://'",
                id="event-store-no-host",
            ),
            pytest.param(
                {"MCP_STATEFUL": "1", "MCP_EVENT_STORE_MAX_EVENTS": "0"},
                "MCP_EVENT_STORE_MAX_EVENTS",
                "must be between 1 and 100000, not 0",
                id="max-events",
            ),
            pytest.param(
                {"MCP_STATEFUL": "1", "MCP_EVENT_STORE_MAX_AGE": "0"},
                "MCP_EVENT_STORE_MAX_AGE",
                "must be between 1 and 86400, not 0",
                id="max-age",
            ),
            pytest.param(
                {"MCP_STATEFUL": "1", "MCP_EVENT_STORE_MAX_AGE": "2", "MCP_SSE_RETRY_MS": "2000"},
                "MCP_SSE_RETRY_MS",
                "a client told to come back after 2000 ms would find its events gone "
                "(MCP_EVENT_STORE_MAX_AGE=2 s): make it shorter",
                id="retry-outlives-events",
            ),
            pytest.param(
                {"MCP_STATEFUL": "1", "MCP_SSE_RETRY_MS": "10"},
                "MCP_SSE_RETRY_MS",
                "must be between 100 and 60000, not 10",
                id="retry-too-short",
            ),
            *(
                pytest.param(
                    {"MCP_STATEFUL": "1", "MCP_INSTANCE_NAME": name},
                    "MCP_INSTANCE_NAME",
                    f"{name!r} must be 1 to 32 lower-case letters, digits or inner hyphens, such as the port: 8000",
                    id=f"instance-name-{label}",
                )
                for name, label in [
                    ("Mcp-A", "upper-case"),
                    ("mcp_a", "underscore"),
                    ("-a", "leading-hyphen"),
                    ("a-", "trailing-hyphen"),
                    ("a.b", "dot"),
                    ("a" * 33, "too-long"),
                ]
            ),
        ],
    )
    def test_refusals(self, env: dict[str, str], variable: str, problem: str) -> None:
        with pytest.raises(SettingsError) as caught:
            Settings.from_mapping({"MCP_DEV": "1", **env})
        assert_refused(caught.value, variable, problem)


class TestSeveralIssuers:
    def test_a_comma_list_shares_the_audiences_and_aligns_the_key_urls(self) -> None:
        settings = Settings.from_mapping(
            production(
                MCP_ISSUER="https://a.example.com, https://b.example.com/t",
                MCP_JWKS_URI="https://a.example.com/keys,",
                MCP_AUDIENCE="api://x",
            )
        )
        assert settings.issuers == (
            IssuerConfig("https://a.example.com", "https://a.example.com/keys", ("api://x",)),
            IssuerConfig("https://b.example.com/t", None, ("api://x",)),
        )
        assert settings.authorization_servers == ("https://a.example.com", "https://b.example.com/t")

    def test_json_gives_each_issuer_its_own_audiences(self) -> None:
        issuers = (
            '[{"issuer": "https://login.microsoftonline.com/t1/v2.0", "audience": "api://guid"},'
            ' {"issuer": "https://tenant.auth0.com/", "audience": ["https://mcp.example.com/mcp"],'
            ' "jwks_uri": "https://tenant.auth0.com/.well-known/jwks.json"}]'
        )
        env = {k: v for k, v in production(MCP_ISSUERS=issuers).items() if k != "MCP_ISSUER"}
        assert Settings.from_mapping(env).issuers == (
            IssuerConfig("https://login.microsoftonline.com/t1/v2.0", None, ("api://guid",)),
            IssuerConfig(
                "https://tenant.auth0.com/",
                "https://tenant.auth0.com/.well-known/jwks.json",
                ("https://mcp.example.com/mcp",),
            ),
        )

    @pytest.mark.parametrize(
        ("env", "variable", "problem"),
        [
            pytest.param(
                {"MCP_ISSUERS": "[]"},
                "MCP_ISSUERS",
                'must be a JSON list like [{"issuer": "https://...", "audience": "..."}]',
                id="empty",
            ),
            pytest.param({"MCP_ISSUERS": "{nope"}, "MCP_ISSUERS", "is not valid JSON", id="not json"),
            pytest.param(
                {"MCP_ISSUERS": '[{"issuer": "https://a.example.com"}]'},
                "MCP_ISSUERS",
                '"audience" of https://a.example.com must be a string or a list of them',
                id="no audience",
            ),
            pytest.param(
                {"MCP_ISSUERS": '[{"issuer": "https://a.example.com", "audience": "x", "aud": 1}]'},
                "MCP_ISSUERS",
                "unknown field(s) ['aud'] in the entry for https://a.example.com",
                id="unknown field",
            ),
        ],
    )
    def test_bad_json(self, env: dict[str, str], variable: str, problem: str) -> None:
        full = {k: v for k, v in production(**env).items() if k != "MCP_ISSUER"}
        assert_refused(refusal(full), variable, problem)

    def test_not_both(self) -> None:
        assert_refused(
            refusal(production(MCP_ISSUERS='[{"issuer": "https://a.example.com", "audience": "x"}]')),
            "MCP_ISSUERS",
            "set either MCP_ISSUERS or MCP_ISSUER, not both",
        )

    def test_key_urls_must_align(self) -> None:
        assert_refused(
            refusal(production(MCP_ISSUER="https://a.example.com,https://b.example.com", MCP_JWKS_URI="https://k")),
            "MCP_JWKS_URI",
            "lists 1 URLs for 2 issuers: give one per issuer, in the same order (leave an entry empty to discover it)",
        )


class TestScalekitPreset:
    def test_environment_and_resource_id_derive_everything(self) -> None:
        env = {
            "MCP_RESOURCE_URL": RESOURCE,
            "SCALEKIT_ENVIRONMENT_URL": "https://acme.scalekit.com/",
            "SCALEKIT_RESOURCE_ID": "res_123",
        }
        settings = Settings.from_mapping(env)
        assert settings.issuers == (
            IssuerConfig("https://acme.scalekit.com", "https://acme.scalekit.com/keys", ("res_123", RESOURCE)),
        )
        assert settings.issuer == "https://acme.scalekit.com"
        assert settings.authorization_servers == ("https://acme.scalekit.com/resources/res_123",)

    def test_the_resource_id_is_required(self) -> None:
        env = {"MCP_RESOURCE_URL": RESOURCE, "SCALEKIT_ENVIRONMENT_URL": "https://acme.scalekit.com"}
        assert_refused(
            refusal(env),
            "SCALEKIT_RESOURCE_ID",
            "required with SCALEKIT_ENVIRONMENT_URL: the MCP server's res_... ID",
        )
