"""2026-07-28 multi-round-trip requests across gunicorn workers: requestState sealed with MCP_STATE_SECRET.

A tool answers its first round with an InputRequiredResult (an elicitation,
plus requestState naming the worker that asked); the official SDK client asks
the user and retries with the answer and the state. With a new connection per
request the retry lands on either worker, and every worker opens what another
sealed because they share the secret. Without a shared secret each worker
seals with a key of its own, which is why the server refuses to start several
workers without one; the in-process check below shows what would break.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from mcp import MCPError
from mcp.types import ElicitRequestParams
from mcp.types import ElicitResult

from app import create_app
from app import stop_worker
from app.settings import Settings
from tests.conformance.conftest import FIXTURE_APP
from tests.conformance.conftest import REPORT
from tests.conformance.conftest import STATE_SECRET
from tests.conformance.fixture import CONFIRM_KEY
from tests.conformance.fixture import CONFIRM_SCHEMA
from tests.conformance.fixture import SCOPES
from tests.conformance.fixture import register_fixture
from tests.support.issuer import MockIssuer
from tests.support.jsonrpc import request_body
from tests.support.jsonrpc import request_headers
from tests.support.jsonrpc import result_of
from tests.support.mcp_client import connect
from tests.support.mcp_client import text_of
from tests.support.servers import RunningServer
from tests.support.servers import free_port
from tests.support.servers import start_gunicorn

TOOL = "confirm_across_workers"
MAX_ROUNDS = 40  # each retry picks a worker at random: 40 rounds all on one worker has odds of 2**-40


@pytest.fixture(scope="module")
def two_workers(issuer: MockIssuer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """The fixture app under gunicorn with 2 workers and a shared MCP_STATE_SECRET, reached directly."""
    folder: Path = tmp_path_factory.mktemp("multi-round-trip")
    port = free_port()
    env = {
        "MCP_RESOURCE_URL": f"http://127.0.0.1:{port}/mcp",
        "MCP_ISSUER": issuer.issuer,
        "MCP_STATE_SECRET": STATE_SECRET,
        "MCP_INSTANCE_PATH": str(folder / "instance"),
    }
    process, base = start_gunicorn(env, folder / "gunicorn.log", port=port, workers=2, threads=4, app=FIXTURE_APP)
    yield RunningServer(process, base, issuer)
    assert process.stop(signal.SIGINT) == 0, process.log()


def worker_pids(master: int) -> set[int]:
    """The processes whose parent is gunicorn's master: its workers."""
    children = set()
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
        except OSError:  # the process ended while we looked
            continue
        if int(fields.get("PPid", "0").strip()) == master:
            children.add(int(fields["Pid"].strip()))
    return children


async def confirm(context: Any, params: ElicitRequestParams) -> ElicitResult:
    assert params.message == "Please confirm"
    assert params.requested_schema == CONFIRM_SCHEMA
    return ElicitResult(action="accept", content={"ok": True})


@pytest.mark.e2e
@pytest.mark.anyio
async def test_a_retry_answered_by_the_other_worker_succeeds(two_workers: RunningServer) -> None:
    workers = worker_pids(two_workers.process.pid)
    assert len(workers) == 2
    token = two_workers.token(*SCOPES, sub="multi-round-trip")
    rounds: list[dict[str, Any]] = []
    async with connect(
        two_workers.url, token, era="2026-07-28", keepalive=False, elicitation_callback=confirm
    ) as client:
        while len(rounds) < MAX_ROUNDS:
            outcome = json.loads(text_of(await client.call_tool(TOOL, {})))
            rounds.append(outcome)
            if outcome["asked_by"] != outcome["answered_by"]:
                break

    crossed = [r for r in rounds if r["asked_by"] != r["answered_by"]]
    REPORT.append(
        f"2026-07-28 multi-round-trip, 2 workers: {len(rounds)} round(s) until a retry reached the other worker"
    )
    assert crossed, f"all {len(rounds)} retries landed on the worker that asked"
    for outcome in rounds:
        assert {outcome["asked_by"], outcome["answered_by"]} <= workers
        assert (outcome["action"], outcome["content"]) == ("accept", {"ok": True})
    assert {crossed[0]["asked_by"], crossed[0]["answered_by"]} == workers


@pytest.mark.e2e
@pytest.mark.anyio
async def test_the_state_is_bound_to_the_user_who_started_the_request(two_workers: RunningServer) -> None:
    alice = two_workers.token(*SCOPES, sub="alice-mrtr")
    mallory = two_workers.token(*SCOPES, sub="mallory-mrtr")
    async with connect(two_workers.url, alice, era="2026-07-28") as client:
        first = await client.session.call_tool(TOOL, {}, allow_input_required=True)
    state = first.request_state
    assert state is not None

    responses: dict[str, Any] = {CONFIRM_KEY: ElicitResult(action="accept", content={"ok": True})}
    async with connect(two_workers.url, mallory, era="2026-07-28") as client:
        with pytest.raises(MCPError) as refused:
            await client.session.call_tool(
                TOOL, {}, input_responses=responses, request_state=state, allow_input_required=True
            )
    assert (refused.value.error.code, refused.value.error.message) == (-32602, "Invalid or expired requestState")


def worker_app(issuer: MockIssuer, folder: Path, state_secret: str | None) -> Flask:
    """One worker's app in-process: production settings, the worker's own MCPServer and sealing key."""
    environment = {
        "MCP_RESOURCE_URL": "http://localhost/mcp",
        "MCP_ISSUER": issuer.issuer,
        "MCP_INSTANCE_PATH": str(folder),
    }
    if state_secret is not None:
        environment["MCP_STATE_SECRET"] = state_secret
    return create_app(Settings.from_mapping(environment), register_tools=register_fixture)


def call(app: Flask, token: str, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    body = request_body("tools/call", {"name": TOOL, "arguments": {}, **params})
    response = app.test_client().post("/mcp", headers=request_headers("tools/call", TOOL, token=token), json=body)
    return response.status_code, result_of(response.content_type, response.get_data())


@pytest.mark.parametrize(
    ("secrets", "retry_works"),
    [
        pytest.param((None, None), False, id="each worker its own key"),
        pytest.param((STATE_SECRET, STATE_SECRET), True, id="a shared MCP_STATE_SECRET"),
    ],
)
def test_another_worker_opens_the_state_only_with_the_shared_secret(
    issuer: MockIssuer, tmp_path: Path, secrets: tuple[str | None, str | None], retry_works: bool
) -> None:
    first_worker, second_worker = (worker_app(issuer, tmp_path / str(i), s) for i, s in enumerate(secrets))
    try:
        token = issuer.mint("http://localhost/mcp", scopes=SCOPES)
        status, asked = call(first_worker, token, {})
        assert (status, asked["result"]["resultType"]) == (200, "input_required")
        retry = {"inputResponses": {CONFIRM_KEY: {"action": "accept", "content": {"ok": True}}}}
        retry["requestState"] = asked["result"]["requestState"]

        status, answered = call(second_worker, token, retry)

        if retry_works:
            assert status == 200
            assert json.loads(answered["result"]["content"][0]["text"])["content"] == {"ok": True}
        else:
            assert status == 400
            assert answered["error"] == {
                "code": -32602,
                "message": "Invalid or expired requestState",
                "data": {"reason": "invalid_request_state"},
            }
            # The same retry is fine on the worker that sealed the state.
            status, answered = call(first_worker, token, retry)
            assert (status, answered["result"]["resultType"]) == (200, "complete")
    finally:
        stop_worker(first_worker)
        stop_worker(second_worker)
