"""The shipped nginx site in front of two gunicorn instances, with the official SDK client over https."""

from __future__ import annotations

import json
import re
import socket
import ssl
import time
import urllib.request
import uuid
import warnings
from pathlib import Path

import anyio
import httpx2
import pytest

from tests.deploy.conftest import ProxiedDeployment
from tests.deploy.conftest import app_env
from tests.deploy.conftest import assert_no_token
from tests.deploy.conftest import lines_with
from tests.support.dpop import DEFAULT_ALGORITHMS
from tests.support.dpop import DEFAULT_ALGS
from tests.support.issuer import MockIssuer
from tests.support.jsonrpc import call_tool
from tests.support.jsonrpc import request_body
from tests.support.jsonrpc import request_headers
from tests.support.mcp_client import connect
from tests.support.mcp_client import json_of
from tests.support.mcp_client import text_of
from tests.support.nginx import start_nginx
from tests.support.servers import free_port
from tests.support.servers import start_gunicorn
from tests.support.tls import TLSFiles

pytestmark = [pytest.mark.e2e]
ERAS = pytest.mark.parametrize("era", ["2026-07-28", "2025-11-25"])
ALL_TOOLS = ["whoami", "greet_user", "list_todos", "add_todo", "delete_todo", "count_to"]
HSTS = "max-age=63072000; includeSubDomains"
LIST = request_body("tools/list")


def client(proxied: ProxiedDeployment) -> httpx2.Client:
    return httpx2.Client(verify=proxied.tls.client_context(), timeout=30)


def metadata_url(proxied: ProxiedDeployment) -> str:
    return f"{proxied.origin}/.well-known/oauth-protected-resource/mcp"


@ERAS
@pytest.mark.anyio
async def test_sdk_client_lists_and_calls_over_https(proxied: ProxiedDeployment, era: str) -> None:
    token = proxied.token("todo:read", sub=f"https-{era}", client_id="cli-https")
    async with connect(proxied.url, token, era=era, verify=proxied.tls.client_context()) as session:
        tools = await session.list_tools()
        whoami = json_of(await session.call_tool("whoami", {}))
        greeting = text_of(await session.call_tool("greet_user", {"name": "Ada"}))
    assert [tool.name for tool in tools.tools] == ALL_TOOLS
    assert (whoami["sub"], whoami["client_id"], whoami["scopes"]) == (f"https-{era}", "cli-https", ["todo:read"])
    assert greeting == "Hello, Ada!"


@ERAS
@pytest.mark.anyio
async def test_progress_events_arrive_one_by_one_through_the_proxy(proxied: ProxiedDeployment, era: str) -> None:
    arrivals: list[float] = []
    async with connect(proxied.url, proxied.token(), era=era, verify=proxied.tls.client_context()) as session:
        start = time.monotonic()

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            arrivals.append(time.monotonic() - start)

        result = await session.call_tool("count_to", {"n": 5}, progress_callback=on_progress)
        finished = time.monotonic() - start
    assert text_of(result) == "Counted to 5."
    print(f"progress arrivals through nginx ({era}):", [round(at, 3) for at in arrivals], "done", round(finished, 3))
    assert len(arrivals) == 5
    # proxy_buffering off: each step arrives about 0.2 s after the previous one,
    # the first long before the 1 s the call takes; a buffering proxy would
    # deliver all five at the end.
    assert arrivals[0] < 0.6, arrivals
    assert finished >= 0.95, finished
    assert all(later - earlier > 0.1 for earlier, later in zip(arrivals, arrivals[1:], strict=False)), arrivals


@pytest.mark.parametrize("path", ["/.well-known/oauth-protected-resource/mcp", "/.well-known/oauth-protected-resource"])
def test_metadata_names_the_https_resource(proxied: ProxiedDeployment, path: str) -> None:
    with client(proxied) as http:
        response = http.get(proxied.origin + path)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "public, max-age=3600"
    assert response.headers["strict-transport-security"] == HSTS
    assert response.json() == {
        "resource": proxied.url,
        "authorization_servers": [proxied.issuer.issuer],
        "bearer_methods_supported": ["header"],
        "resource_name": "Flask MCP server",
        "scopes_supported": ["todo:read", "todo:write"],
        "dpop_signing_alg_values_supported": DEFAULT_ALGORITHMS,
    }


def test_every_challenge_points_at_https_metadata(proxied: ProxiedDeployment) -> None:
    prm = metadata_url(proxied)
    with client(proxied) as http:
        missing = http.post(proxied.url, headers=request_headers("tools/list"), json=request_body("tools/list"))
        expired = http.post(
            proxied.url,
            headers=request_headers("tools/list", token=proxied.token(exp=1_000_000)),
            json=request_body("tools/list"),
        )
        headers, body = call_tool("delete_todo", {"id": 1}, token=proxied.token("todo:read"))
        scope = http.post(proxied.url, headers=headers, content=body)
    assert (missing.status_code, expired.status_code, scope.status_code) == (401, 401, 403)
    tail = f'scope="todo:read todo:write", resource_metadata="{prm}"'
    assert missing.headers.get_list("www-authenticate") == [f"Bearer {tail}", f"DPoP {DEFAULT_ALGS}, {tail}"]
    error = 'error="invalid_token", error_description="The access token expired"'
    assert expired.headers.get_list("www-authenticate") == [
        f"Bearer {error}, {tail}",
        f"DPoP {error}, {DEFAULT_ALGS}, {tail}",
    ]
    error = 'error="insufficient_scope", error_description="This call requires the scopes: todo:delete"'
    tail = f'scope="todo:delete", resource_metadata="{prm}"'
    assert scope.headers.get_list("www-authenticate") == [
        f"Bearer {error}, {tail}",
        f"DPoP {error}, {DEFAULT_ALGS}, {tail}",
    ]
    for response in (missing, expired, scope):
        assert response.headers["strict-transport-security"] == HSTS
        assert response.headers["content-type"] == "application/json"


def test_a_foreign_host_header_is_421_through_the_proxy(proxied: ProxiedDeployment) -> None:
    with client(proxied) as http:
        response = http.post(
            proxied.url,
            headers={**request_headers("tools/list", token=proxied.token()), "Host": "evil.example"},
            json=request_body("tools/list"),
        )
    assert response.status_code == 421
    assert response.json() == {
        "error": "misdirected_request",
        "error_description": "This server does not serve the requested host",
    }


def test_plain_http_redirects_to_https_and_serves_acme_challenges(proxied: ProxiedDeployment) -> None:
    challenge = proxied.nginx.acme_root / ".well-known" / "acme-challenge" / "token-abc"
    challenge.write_text("token-abc.thumbprint")
    challenge.chmod(0o644)
    base = f"http://127.0.0.1:{proxied.nginx.http_port}"
    with httpx2.Client(timeout=10) as http:
        redirected = http.get(base + "/.well-known/oauth-protected-resource/mcp?x=1")
        posted = http.post(base + "/mcp", content=b"{}")
        acme = http.get(base + "/.well-known/acme-challenge/token-abc")
        missing = http.get(base + "/.well-known/acme-challenge/nothing")
    assert redirected.status_code == 301
    assert redirected.headers["location"] == "https://127.0.0.1/.well-known/oauth-protected-resource/mcp?x=1"
    assert posted.status_code == 301
    assert (acme.status_code, acme.text, acme.headers["content-type"]) == (200, "token-abc.thumbprint", "text/plain")
    assert missing.status_code == 404


@pytest.mark.parametrize(
    "version, accepted",
    [
        pytest.param(ssl.TLSVersion.TLSv1_1, False, id="tls1.1"),
        pytest.param(ssl.TLSVersion.TLSv1_2, True, id="tls1.2"),
        pytest.param(ssl.TLSVersion.TLSv1_3, True, id="tls1.3"),
    ],
)
def test_only_modern_tls_protocols(proxied: ProxiedDeployment, version: ssl.TLSVersion, accepted: bool) -> None:
    context = proxied.tls.client_context()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # offering TLS 1.1 is the point of the test
        context.minimum_version = version
        context.maximum_version = version
    if version < ssl.TLSVersion.TLSv1_2:
        context.set_ciphers("ALL:@SECLEVEL=0")  # let this client offer it; nginx must be the one to refuse
    with socket.create_connection(("127.0.0.1", proxied.nginx.https_port), timeout=10) as raw:
        if accepted:
            with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                assert tls.version() == {ssl.TLSVersion.TLSv1_2: "TLSv1.2", ssl.TLSVersion.TLSv1_3: "TLSv1.3"}[version]
        else:
            with pytest.raises(ssl.SSLError) as refused, context.wrap_socket(raw, server_hostname="127.0.0.1"):
                pass
            assert refused.value.reason == "TLSV1_ALERT_PROTOCOL_VERSION", refused.value


def test_metrics_are_not_served_through_nginx(proxied: ProxiedDeployment) -> None:
    with client(proxied) as http:
        counted = http.post(
            proxied.url,
            headers=request_headers("tools/list", token=proxied.token()),
            json=request_body("tools/list"),
        )
        through_nginx = http.get(proxied.origin + "/metrics")
    assert counted.status_code == 200
    assert through_nginx.status_code == 404
    assert through_nginx.headers["content-type"] == "application/json"
    assert through_nginx.json()["error"] == "not_found"
    assert through_nginx.headers["strict-transport-security"] == HSTS
    # A scraper on the VM talks to each instance directly; the one nginx chose counted the request.
    scrapes = [httpx2.get(base + "/metrics") for base in proxied.bases]
    assert [scrape.status_code for scrape in scrapes] == [200] * len(proxied.bases)
    counted_line = 'mcp_requests_total{method="tools/list",status="200",tool="-"}'
    assert any(counted_line in scrape.text for scrape in scrapes), [scrape.text for scrape in scrapes]


def test_a_body_over_4_mib_is_refused_by_nginx_with_json(proxied: ProxiedDeployment) -> None:
    with client(proxied) as http:
        response = http.post(
            proxied.url,
            headers=request_headers("tools/list", token=proxied.token()),
            content=b" " * (4 * 1024 * 1024 + 1),
        )
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "error": "request_entity_too_large",
        "error_description": "The request body is larger than 4 MiB",
    }


@pytest.mark.anyio
async def test_two_instances_behind_one_upstream_share_the_calls(proxied: ProxiedDeployment) -> None:
    before = [len(re.findall(r'"POST /mcp ', instance.log())) for instance in proxied.instances]
    results: list[str] = []

    async def one_client(number: int) -> None:
        token = proxied.token(sub=f"client-{number}")
        async with connect(proxied.url, token, verify=proxied.tls.client_context()) as session:
            for call in range(5):
                results.append(text_of(await session.call_tool("greet_user", {"name": f"{number}-{call}"})))

    async with anyio.create_task_group() as group:
        for number in range(6):
            group.start_soon(one_client, number)
    assert sorted(results) == sorted(f"Hello, {n}-{c}!" for n in range(6) for c in range(5))
    served = [
        len(re.findall(r'"POST /mcp ', instance.log())) - earlier
        for instance, earlier in zip(proxied.instances, before, strict=True)
    ]
    print("POST /mcp served per instance:", served)
    assert all(count > 0 for count in served), served
    upstreams = set(re.findall(r"upstream=(127\.0\.0\.1:\d+)", proxied.nginx.access_log()))
    assert upstreams == {base.removeprefix("http://") for base in proxied.bases}


def test_logs_hold_no_token_and_no_query_string(proxied: ProxiedDeployment) -> None:
    token = proxied.token()
    # The user agent is in nginx's and gunicorn's access lines: it finds this request's lines.
    agent = f"token-in-query-{uuid.uuid4().hex}"
    leaked = urllib.request.Request(
        f"{proxied.url}?access_token={token}",
        data=json.dumps(request_body("tools/list")).encode(),
        headers={**request_headers("tools/list", token=token), "User-Agent": agent},
    )
    with urllib.request.urlopen(leaked, context=proxied.tls.client_context(), timeout=10) as response:
        assert response.status == 200
    # nginx writes its access line after the response, gunicorn its own when the body is closed.
    nginx_lines = lines_with(agent, proxied.nginx.access_log)
    instance_lines = lines_with(agent, lambda: "".join(instance.log() for instance in proxied.instances))
    assert len(nginx_lines) == 1, nginx_lines
    assert len(instance_lines) == 1, instance_lines
    assert re.search(r'"POST /mcp HTTP/1\.1" 200 ', nginx_lines[0]), nginx_lines[0]
    assert '"POST /mcp HTTP/1.1" 200 ' in instance_lines[0], instance_lines[0]
    for line in (*nginx_lines, *instance_lines):
        assert token not in line and "access_token" not in line, line
    logs = proxied.logs()
    assert_no_token(logs)
    assert "access_token" not in logs


def test_behind_the_shipped_site_without_trusted_proxies_the_server_says_so(
    issuer: MockIssuer, tls_files: TLSFiles, tmp_path: Path
) -> None:
    """The nginx site proxies to 127.0.0.1 and needs MCP_TRUSTED_PROXIES=1: a server started without it warns at
    start, and again when the first refusal comes through the proxy (every client would share one bucket)."""
    https_port = free_port()
    env = app_env(issuer, f"https://127.0.0.1:{https_port}/mcp", tmp_path)
    process, base = start_gunicorn(env, tmp_path / "gunicorn.log", workers=1)
    nginx = None
    try:
        nginx = start_nginx(tmp_path / "nginx", tls_files, [int(base.rsplit(":", 1)[1])], https_port=https_port)
        with httpx2.Client(verify=tls_files.client_context(), timeout=30) as http:
            refused = http.post(nginx.origin + "/mcp", headers=request_headers("tools/list"), json=LIST)
        assert refused.status_code == 401
        log = process.log()
        assert (
            "listening on this machine only (127.0.0.1:" in log
            and "with MCP_TRUSTED_PROXIES=0: behind nginx (nginx/mcp-server.conf) set MCP_TRUSTED_PROXIES=1" in log
        )
        assert (
            "requests arrive through a proxy (they carry X-Forwarded-For or Forwarded) but MCP_TRUSTED_PROXIES" in log
        )
    finally:
        if nginx is not None:
            nginx.stop()
        assert process.stop() == 0


def test_with_trusted_proxies_there_is_no_warning(proxied: ProxiedDeployment) -> None:
    with client(proxied) as http:
        assert http.post(proxied.url, headers=request_headers("tools/list"), json=LIST).status_code == 401
    logs = "".join(instance.log() for instance in proxied.instances)
    assert "MCP_TRUSTED_PROXIES=0" not in logs
    assert "MCP_TRUSTED_PROXIES is 0" not in logs
