"""The benchmark's reference server (bench/native_app.py) serves the examples and the streaming tool."""

from __future__ import annotations

import asyncio
import importlib
import sys
from pathlib import Path

import pytest

from bench.run import Row
from bench.run import features_ratio
from bench.run import rotated
from tests.e2e.test_sdk_client import ALL_TOOLS
from tests.support.issuer import MockIssuer


def test_native_app_serves_the_examples_and_the_streaming_tool(
    issuer: MockIssuer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BENCH_ISSUER", issuer.issuer)
    monkeypatch.setenv("BENCH_JWKS_URI", issuer.jwks_uri)
    monkeypatch.setenv("BENCH_AUDIENCE", "http://localhost/mcp")
    monkeypatch.setenv("BENCH_DATABASE", str(tmp_path / "native.sqlite3"))
    monkeypatch.delitem(sys.modules, "bench.native_app", raising=False)
    native = importlib.import_module("bench.native_app")
    monkeypatch.delitem(sys.modules, "bench.native_app")
    tools = asyncio.run(native.server.list_tools())
    assert [tool.name for tool in tools] == [*ALL_TOOLS, "report_steps"]
    assert native.server.instructions.startswith("Tools of a small todo list")
    assert (tmp_path / "native.sqlite3").is_file()


def test_each_server_takes_each_place_once_over_as_many_rounds() -> None:
    names = ["native-gunicorn", "native-uvicorn", "ceiling"]
    orders = [rotated(names, round_index) for round_index in range(3)]
    assert orders == [
        ["native-gunicorn", "native-uvicorn", "ceiling"],
        ["native-uvicorn", "ceiling", "native-gunicorn"],
        ["ceiling", "native-gunicorn", "native-uvicorn"],
    ]
    assert rotated(["ceiling"], 5) == ["ceiling"]
    assert rotated([], 1) == []


def test_ours_full_and_ours_run_back_to_back_each_first_in_turn() -> None:
    names = ["ours-full", "ours", "native-gunicorn"]
    orders = [rotated(names, round_index) for round_index in range(4)]
    assert orders == [
        ["ours-full", "ours", "native-gunicorn"],
        ["native-gunicorn", "ours", "ours-full"],
        ["ours-full", "ours", "native-gunicorn"],
        ["native-gunicorn", "ours", "ours-full"],
    ]
    assert rotated(["ours", "ceiling"], 1) == ["ceiling", "ours"]


def test_the_features_cost_is_the_median_of_the_rounds_ratios() -> None:
    full = Row("ours-full", "tools/call 2026-07-28", 16, rounds=[{"rps": 90.0}, {"rps": 190.0}, {"rps": 95.0}])
    lean = Row("ours", "tools/call 2026-07-28", 16, rounds=[{"rps": 100.0}, {"rps": 200.0}, {"rps": 50.0}])
    assert features_ratio(full, lean) == pytest.approx(0.95)  # the ratios 0.90, 0.95, 1.90
