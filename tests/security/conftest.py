"""A real gunicorn for the hostile-input tests: rate limits off, so every input reaches the code under test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.issuer import MockIssuer
from tests.support.servers import RunningServer
from tests.support.servers import start_app


@pytest.fixture(scope="module")
def hardened_server(issuer: MockIssuer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    server = start_app(issuer, tmp_path_factory.mktemp("hostile"), MCP_RATE_LIMIT="off")
    yield server
    server.stop()
