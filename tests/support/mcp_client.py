"""The official SDK client, connected to a running server with a bearer token (Streamable HTTP, or HTTP+SSE)."""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx2
from mcp import Client
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client

ERAS = {"2026-07-28": "auto", "2025-11-25": "legacy"}


@asynccontextmanager
async def connect(
    url: str,
    token: str | None,
    *,
    era: str = "2026-07-28",
    event_hooks: dict[str, list[Any]] | None = None,
    verify: ssl.SSLContext | bool = True,
    keepalive: bool = True,
    **options: Any,
) -> AsyncIterator[Client]:
    """``verify`` is what the client trusts for https (an SSLContext with a test CA); ``keepalive=False``
    opens a new connection for every request (to spread them over gunicorn's workers)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    http_options: dict[str, Any] = {"headers": headers, "timeout": httpx2.Timeout(30, read=60), "verify": verify}
    if not keepalive:
        http_options["limits"] = httpx2.Limits(max_keepalive_connections=0)
    if event_hooks:
        http_options["event_hooks"] = event_hooks
    async with (
        httpx2.AsyncClient(**http_options) as http,
        Client(streamable_http_client(url, http_client=http), mode=ERAS[era], **options) as client,
    ):
        yield client


@asynccontextmanager
async def connect_sse(
    url: str, token: str, *, verify: ssl.SSLContext | bool = True, **options: Any
) -> AsyncIterator[Client]:
    """The 2024-11-05 HTTP+SSE transport (``sse_client``) to the stream at ``url``, as an SSE-only client."""

    def http_client(
        headers: dict[str, str] | None = None, timeout: httpx2.Timeout | None = None, auth: httpx2.Auth | None = None
    ) -> httpx2.AsyncClient:
        return httpx2.AsyncClient(headers=headers, timeout=timeout, auth=auth, verify=verify)

    transport = sse_client(
        url, headers={"Authorization": f"Bearer {token}"}, timeout=30, httpx_client_factory=http_client
    )
    async with Client(transport, mode="legacy", **options) as client:
        yield client


def text_of(result: Any) -> str:
    assert not result.is_error, result
    assert len(result.content) == 1
    return str(result.content[0].text)


def json_of(result: Any) -> Any:
    return json.loads(text_of(result))
