"""Benchmark this server against the SDK's native ASGI server, in one run, on this machine.

``make bench`` (or ``.venv/bin/python -m bench.run``). Starts, side by side on loopback ports:

* ours-full: gunicorn with the shipped gunicorn.conf.py (2 connection workers, reuse_port) and every
  shipped feature on: access log, audit log, metrics, rate limits, per-caller caps;
* ours: the same, as lean as the reference (none of those features);
* native: the same tools in the SDK's own Starlette app with its bearer authentication, under
  ``gunicorn -k asgi -w 2 --reuse-port`` (the reference) and under uvicorn with one worker;
* ours-uwsgi: ours-full under uWSGI as WSGI hosts run it (2 processes, no threads);
* ours-flask-run: ours-full under ``flask run`` (Werkzeug's development server), one request kind only;
* ceiling: a bare Flask view returning "ok" under gunicorn, one request kind only.

Each is driven with wrk using the exact request bytes the official SDK client sends (captured from a real
client session) and a valid token: ``tools/list`` and ``tools/call greet_user``, in the 2026-07-28 era and
the 2025-11-25 era, at 1 and 16 connections, and a streaming call (``report_steps``, five progress
notifications and the result as Server-Sent Events) in both eras at 16 connections, in interleaved rounds.
Every server's answers are checked to be the correct MCP result before and after it is loaded. Results: a
table on stdout with the targets of the README's Performance section, raw JSON and a chart under
bench/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
from dataclasses import asdict
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any

import anyio
import httpx2

from tests.support.issuer import MockIssuer
from tests.support.mcp_client import connect
from tests.support.servers import BIN
from tests.support.servers import ROOT
from tests.support.servers import UWSGI_LOG_FORMAT
from tests.support.servers import ServerProcess
from tests.support.servers import free_port

AUDIENCE = "https://bench.example/mcp"
RESULTS = ROOT / "bench" / "results"
STATE_SECRET = "bench-state-secret-0123456789abcdefghijklmnopqrstuvwxyz"
ERAS = ("2026-07-28", "2025-11-25")
STREAM_STEPS = 5
# What the benchmark's servers serve: the examples, and the streaming tool (bench/streaming_tools.py).
TOOLS = "flask_mcp_examples:register,bench.streaming_tools:register"
REFERENCE = "native-gunicorn"
# Measured back to back in every round: their ratio is what the shipped features cost.
PAIRED = ("ours-full", "ours")
SERVER_ORDER = ("ours-full", "ours", "native-gunicorn", "native-uvicorn", "ours-uwsgi", "ours-flask-run", "ceiling")
# Servers measured with one kind of request only, named here.
SINGLE_REQUEST = {"ceiling": None, "ours-flask-run": "tools/call 2026-07-28"}


@dataclass
class Captured:
    """One request exactly as the SDK client sent it."""

    name: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Row:
    server: str
    request: str
    connections: int
    rounds: list[dict[str, float]] = field(default_factory=list)

    def median(self, key: str) -> float:
        return statistics.median(r[key] for r in self.rounds)

    def span(self, key: str) -> tuple[float, float]:
        values = [r[key] for r in self.rounds]
        return min(values), max(values)


# -- capturing what the SDK client sends


async def capture_requests(url: str, token: str) -> dict[str, Captured]:
    """Run the official client against our server and keep the bytes of the requests the benchmark sends."""
    captured: dict[str, Captured] = {}
    for era in ERAS:
        seen: list[httpx2.Request] = []

        async def record(request: httpx2.Request) -> None:
            seen.append(request)  # noqa: B023 (consumed within this iteration)

        def keep(name: str) -> None:
            request = next(r for r in reversed(seen) if r.method == "POST")  # noqa: B023
            headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
            captured[name] = Captured(name, headers, request.content)

        async def progress(done: float, total: float | None, message: str | None) -> None:
            return None

        async with connect(url, token, era=era, event_hooks={"request": [record]}) as client:
            await client.list_tools()
            keep(f"tools/list {era}")
            await client.call_tool("greet_user", {"name": "bench"})
            keep(f"tools/call {era}")
            await client.call_tool("report_steps", {"steps": STREAM_STEPS}, progress_callback=progress)
            keep(f"streaming call {era}")
    return captured


def check_answer(url: str, request: Captured) -> None:
    """Fail loudly unless ``url`` answers ``request`` with the correct MCP result."""
    response = httpx2.post(url, headers=request.headers, content=request.body, timeout=30)
    if response.status_code != 200:
        raise SystemExit(f"{url} answered {request.name} with {response.status_code}: {response.text[:300]}")
    text = response.text
    events = 0
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        data = [line[5:] for line in text.splitlines() if line.startswith("data:")]
        events = sum(1 for line in data if '"notifications/progress"' in line)
        text = data[-1]
    result = json.loads(text).get("result")
    if request.name.startswith("streaming"):
        ok = (
            events == STREAM_STEPS
            and bool(result)
            and result["content"][0]["text"] == f"Reported {STREAM_STEPS} steps."
        )
    elif request.name.startswith("tools/list"):
        names = [tool["name"] for tool in (result or {}).get("tools", [])]
        ok = "greet_user" in names and "whoami" in names
    else:
        ok = bool(result) and result["content"][0]["text"] == "Hello, bench!" and not result.get("isError")
    if not ok:
        raise SystemExit(f"{url} gave a wrong answer to {request.name}: {text[:300]}")


# -- wrk


def lua_script(request: Captured, folder: Path) -> Path:
    lines = ['wrk.method = "POST"', f"wrk.body = {json.dumps(request.body.decode())}"]
    lines += [f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}" for k, v in request.headers.items()]
    path = folder / (re.sub(r"\W+", "_", request.name) + ".lua")
    path.write_text("\n".join(lines) + "\n")
    return path


def rotated(names: list[str], by: int) -> list[str]:
    """``names`` turned by ``by`` places: the order servers are measured in, for one cell of one round.

    ``ours-full`` and ``ours`` move as one, back to back, the first of them alternating from one
    turn to the next: the features' cost is the ratio of the two (:func:`features_ratio`), and two
    runs a few seconds apart share the machine's state far better than two runs a minute apart.
    """
    pair = [name for name in PAIRED if name in names]
    units: list[list[str]] = []
    for name in names:
        if name in pair:
            if name == pair[0]:
                units.append(pair if by % 2 == 0 else pair[::-1])
        else:
            units.append([name])
    if not units:
        return []
    by %= len(units)
    return [name for unit in units[by:] + units[:by] for name in unit]


def features_ratio(full: Row, lean: Row) -> float:
    """ours-full's req/s over ours', the median of the rounds' ratios (each round ran them back to back)."""
    return statistics.median(f["rps"] / n["rps"] for f, n in zip(full.rounds, lean.rounds, strict=True))


def run_wrk(url: str, script: Path, connections: int, seconds: int, server_pid: int | None = None) -> dict[str, float]:
    """One wrk run; with ``server_pid``, also the server's CPU time per request (steadier than req/s)."""
    threads = 1 if connections == 1 else 2
    args = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url]
    pids = process_tree(server_pid) if server_pid else []
    before = cpu_seconds(pids)
    output = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 60, check=True).stdout
    result = parse_wrk(output)
    if pids:
        result["cpu_ms_per_request"] = (cpu_seconds(pids) - before) * 1000 / max(result["requests"], 1)
    return result


def _duration_ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[unit]


def parse_wrk(output: str) -> dict[str, float]:
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    p50 = _duration_ms(re.search(r"\s50%\s+(\S+)", output).group(1))  # type: ignore[union-attr]
    p99 = _duration_ms(re.search(r"\s99%\s+(\S+)", output).group(1))  # type: ignore[union-attr]
    requests = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    socket = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    errors = sum(int(n) for n in socket.groups()) if socket else 0
    return {
        "rps": rps,
        "p50_ms": p50,
        "p99_ms": p99,
        "requests": requests,
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        "errors": errors,
    }


# -- servers


def gunicorn_ours(port: int, env: dict[str, str], folder: Path) -> ServerProcess:
    args = [str(BIN / "gunicorn"), "-c", str(ROOT / "gunicorn.conf.py"), "--bind", f"127.0.0.1:{port}", "wsgi:app"]
    return ServerProcess(args, env, folder / f"ours-{port}.log", f"http://127.0.0.1:{port}/readyz")


def uwsgi_ours(port: int, env: dict[str, str], folder: Path) -> ServerProcess:
    """As PythonAnywhere-style hosts run it: a master and 2 processes, no threads, behind a front router."""
    # uWSGI's HTTP router takes the connections and hands each request to a free process, as the host's
    # front proxy does; with --http11-socket every kept-alive connection would hold one of the 2 processes.
    args = [str(BIN / "uwsgi"), "--master", "--processes", "2", "--http", f"127.0.0.1:{port}", "--http-keepalive"]
    args += ["--http-auto-chunked"]  # streamed answers (no Content-Length) keep the connection alive
    args += ["--wsgi-file", str(ROOT / "wsgi.py"), "--callable", "application", "--need-app", "--die-on-term"]
    args += ["--log-format", UWSGI_LOG_FORMAT]
    return ServerProcess(args, env, folder / "uwsgi.log", f"http://127.0.0.1:{port}/readyz")


def flask_run_ours(port: int, env: dict[str, str], folder: Path) -> ServerProcess:
    args = [str(BIN / "flask"), "--app", "wsgi", "run", "--host", "127.0.0.1", "--port", str(port)]
    return ServerProcess(args, env, folder / "flask-run.log", f"http://127.0.0.1:{port}/readyz")


def gunicorn_native(port: int, env: dict[str, str], folder: Path) -> ServerProcess:
    args = [str(BIN / "gunicorn"), "-c", "python:bench.gunicorn_plain", "-k", "asgi", "-w", "2", "--reuse-port"]
    args += ["--bind", f"127.0.0.1:{port}"]
    args += ["bench.native_app:app"]
    return ServerProcess(args, env, folder / "native.log", f"http://127.0.0.1:{port}/mcp", any_status=True)


def uvicorn_native(port: int, env: dict[str, str], folder: Path) -> ServerProcess:
    args = [str(BIN / "uvicorn"), "--workers", "1", "--no-access-log", "--port", str(port), "bench.native_app:app"]
    return ServerProcess(args, env, folder / "uvicorn.log", f"http://127.0.0.1:{port}/mcp", any_status=True)


def gunicorn_ceiling(port: int, env: dict[str, str], folder: Path) -> ServerProcess:
    args = [str(BIN / "gunicorn"), "-c", "python:bench.gunicorn_plain", "-k", "gthread", "-w", "2", "--threads", "4"]
    args += ["--reuse-port"]
    args += ["--bind", f"127.0.0.1:{port}", "bench.ceiling_app:app"]
    return ServerProcess(args, env, folder / "ceiling.log", f"http://127.0.0.1:{port}/mcp", any_status=True)


def process_tree(pid: int) -> list[int]:
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [pid, *(int(child) for child in children)]


def cpu_seconds(pids: list[int]) -> float:
    """User plus system CPU time of these processes so far (their threads included)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def worker_rss_mib(master_pid: int) -> list[float]:
    children = subprocess.run(["pgrep", "-P", str(master_pid)], capture_output=True, text=True).stdout.split()
    sizes = []
    for pid in children:
        status = Path(f"/proc/{pid}/status").read_text()
        sizes.append(int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024)  # type: ignore[union-attr]
    return sizes


# -- the parts of a run


def auth_cost_us(issuer: MockIssuer, folder: Path) -> dict[str, float]:
    """Microseconds the authentication hook costs per request, for a token seen before and a new one."""
    from app import create_app
    from app.settings import Settings

    settings = Settings.from_mapping(
        {
            "MCP_RESOURCE_URL": "http://localhost/mcp",
            "MCP_ISSUER": issuer.issuer,
            "MCP_AUDIENCE": AUDIENCE,
            "MCP_INSTANCE_PATH": str(folder / "auth-instance"),
            # The same request is authenticated 20,000 times and never answered: the rate limit and the
            # in-flight cap, which are not authentication, would refuse it after their first few hundred.
            "MCP_RATE_LIMIT": "off",
            "MCP_CAP_IN_FLIGHT": "off",
        }
    )
    app = create_app(settings)
    authentication = app.extensions["mcp_auth"]
    validator = authentication.verifier
    token = issuer.mint(AUDIENCE, scopes=["todo:read"])
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    body = b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}'
    with app.test_request_context("/mcp", method="POST", headers=headers, data=body):
        assert authentication.authenticate() is None
        number = 20_000
        cached = timeit.timeit(authentication.authenticate, number=number) / number * 1e6
    fresh_tokens = [issuer.mint(AUDIENCE, sub=f"user-{i}") for i in range(2_000)]
    start = time.perf_counter()
    for fresh in fresh_tokens:
        validator.validate(fresh)
    uncached = (time.perf_counter() - start) / len(fresh_tokens) * 1e6
    app.extensions["mcp_bridge"].loops.close()
    return {"hook_cached_token_us": round(cached, 1), "signature_check_new_token_us": round(uncached, 1)}


def leak_check(url: str, request: Captured, master_pid: int, folder: Path, target: int) -> dict[str, Any]:
    """Resident memory per worker after the first 10,000 requests and after ``target``."""
    script = lua_script(request, folder)
    served, after_10k = 0, None
    while served < target:
        served += int(run_wrk(url, script, 16, 5)["requests"])
        if after_10k is None and served >= 10_000:
            after_10k = worker_rss_mib(master_pid)
    final = worker_rss_mib(master_pid)
    growth = max(f / b - 1 for f, b in zip(final, after_10k or final, strict=False)) if after_10k else 0.0
    return {"requests": served, "rss_mib_after_10k": after_10k, "rss_mib_final": final, "max_growth": growth}


def chart(rows: list[Row], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    requests = sorted({r.request for r in rows})
    servers = list(dict.fromkeys(r.server for r in rows))
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    for axis, connections in zip(axes, (1, 16), strict=True):
        width = 0.8 / len(servers)
        for i, server in enumerate(servers):
            values = []
            for request in requests:
                match = [r for r in rows if (r.server, r.request, r.connections) == (server, request, connections)]
                values.append(match[0].median("rps") if match else 0)
            axis.bar([x + i * width for x in range(len(requests))], values, width, label=server)
        axis.set_xticks([x + 0.4 - width / 2 for x in range(len(requests))], requests, rotation=15, fontsize=8)
        axis.set_title(f"{connections} connection{'s' if connections > 1 else ''}: requests/s (median)")
        axis.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _ordered(rows: list[Row]) -> list[Row]:
    requests = list(dict.fromkeys(r.request for r in rows))

    def key(row: Row) -> tuple[int, int, int]:
        server = SERVER_ORDER.index(row.server) if row.server in SERVER_ORDER else len(SERVER_ORDER)
        return row.connections, requests.index(row.request), server

    return sorted(rows, key=key)


def report(rows: list[Row], reference: str) -> str:
    lines = [
        "| server | request | conns | req/s median (min-max) | p50 ms | p99 ms | CPU ms/req | against native "
        "| errors, non-2xx |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    by_key = {(r.server, r.request, r.connections): r for r in rows}
    for row in _ordered(rows):
        low, high = row.span("rps")
        native = by_key.get((reference, row.request, row.connections))
        ratio = ""
        if row.server.startswith("ours") and native is not None:
            ratio = (
                f"{row.median('rps') / native.median('rps'):.2f}x req/s, "
                f"p50 {row.median('p50_ms') / native.median('p50_ms'):.2f}x, "
                f"p99 {row.median('p99_ms') / native.median('p99_ms'):.2f}x, "
                f"CPU {row.median('cpu_ms_per_request') / native.median('cpu_ms_per_request'):.2f}x"
            )
        errors = sum(r["errors"] for r in row.rounds), sum(r["non_2xx"] for r in row.rounds)
        lines.append(
            f"| {row.server} | {row.request} | {row.connections} | {row.median('rps'):.0f} ({low:.0f}-{high:.0f}) "
            f"| {row.median('p50_ms'):.2f} | {row.median('p99_ms'):.2f} | {row.median('cpu_ms_per_request'):.3f} "
            f"| {ratio} | {errors[0]}, {errors[1]} |"
        )
    return "\n".join(lines)


def targets(rows: list[Row], memory: dict[str, Any] | None, reference: str = REFERENCE) -> list[tuple[str, bool]]:
    """The targets of the README's Performance section, each with whether this run met it."""
    by_key = {(r.server, r.request, r.connections): r for r in rows}
    checks: list[tuple[str, bool]] = []

    def pair(request: str, connections: int, server: str = "ours-full") -> tuple[Row, Row] | None:
        ours, native = by_key.get((server, request, connections)), by_key.get((reference, request, connections))
        return (ours, native) if ours is not None and native is not None else None

    for row in _ordered(rows):
        if row.server != "ours-full":
            continue
        found = pair(row.request, row.connections)
        if found is None:
            continue
        ours, native = found
        rps = ours.median("rps") / native.median("rps")
        cpu = ours.median("cpu_ms_per_request") / native.median("cpu_ms_per_request")
        where = f"{row.request}, {row.connections} conn"
        if row.connections == 16:
            checks.append((f"{where}: req/s {rps:.2f}x native (at least 1.0)", rps >= 1.0))
        else:
            p50 = ours.median("p50_ms") / native.median("p50_ms")
            p99 = ours.median("p99_ms") / native.median("p99_ms")
            checks.append((f"{where}: p50 {p50:.2f}x native (at most 1.2)", p50 <= 1.2))
            checks.append((f"{where}: p99 {p99:.2f}x native (at most 1.0)", p99 <= 1.0))
        checks.append((f"{where}: CPU per request {cpu:.2f}x native (at most 1.0)", cpu <= 1.0))
        lean = by_key.get(("ours", row.request, row.connections))
        if lean is not None:
            features = features_ratio(ours, lean)
            extra_cpu = ours.median("cpu_ms_per_request") / lean.median("cpu_ms_per_request")
            checks.append(
                (
                    f"{where}: ours-full {features:.2f}x ours (at least 0.95; CPU per request {extra_cpu:.2f}x ours)",
                    features >= 0.95,
                )
            )
    if memory:
        growth = memory["max_growth"]
        checks.append(
            (
                f"memory per worker from 10k to {memory['requests']} requests: {growth:+.1%} (within 10 %)",
                abs(growth) <= 0.10,
            )
        )
    failed = [(r.server, r.request, r.connections) for r in rows if any(x["errors"] or x["non_2xx"] for x in r.rounds)]
    checks.append((f"errors or non-2xx answers: {len(failed)} rows {failed or ''}", not failed))
    return checks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5, help="duration of each wrk run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--leak-requests", type=int, default=100_000, help="0 skips the memory check")
    parser.add_argument("--servers", default=",".join(SERVER_ORDER))
    options = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is missing: apt-get install wrk (make bench installs it)")
    RESULTS.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="mcp-bench-"))
    started: list[ServerProcess] = []
    with MockIssuer() as issuer:
        # Valid for the whole run (the mock's default is 10 minutes; make bench takes longer).
        token = issuer.mint(AUDIENCE, scopes=["todo:read", "todo:write"], exp=int(time.time()) + 4 * 3600)
        ports = {name: free_port() for name in options.servers.split(",")}
        common = {
            "PATH": os.environ["PATH"],
            "BENCH_ISSUER": issuer.issuer,
            "BENCH_JWKS_URI": issuer.jwks_uri,
            "BENCH_AUDIENCE": AUDIENCE,
            "BENCH_DATABASE": str(folder / "native.sqlite3"),
        }
        ours_env = {
            **common,
            "MCP_ISSUER": issuer.issuer,
            "MCP_AUDIENCE": AUDIENCE,
            "MCP_STATE_SECRET": STATE_SECRET,
            "MCP_INSTANCE_PATH": str(folder / "instance"),
            "MCP_LOG_LEVEL": "warning",
            "MCP_TOOLS": TOOLS,
        }
        # "ours": like the reference, no access log, audit log, metrics, rate limits or per-caller caps.
        # "ours-full": all of them on, as shipped (the limit raised past what one benchmark token sends; the
        # caps' defaults, 32 in flight per caller and worker, are above its 16 connections).
        full = {"MCP_RATE_LIMIT": "1000000/minute"}
        lean = {"MCP_ACCESS_LOG": "off", "MCP_AUDIT_LOG": "0", "MCP_METRICS": "0", "MCP_RATE_LIMIT": "off"}
        lean |= {"MCP_CAP_IN_FLIGHT": "off", "MCP_CAP_STREAMS": "off", "MCP_CAP_SESSIONS": "off"}
        variants = {
            "ours": lean,
            "ours-full": full,
            "ours-uwsgi": full,
            "ours-flask-run": full,
        }
        starters = {
            "ours": gunicorn_ours,
            "ours-full": gunicorn_ours,
            "ours-uwsgi": uwsgi_ours,
            "ours-flask-run": flask_run_ours,
            "native-gunicorn": gunicorn_native,
            "native-uvicorn": uvicorn_native,
            "ceiling": gunicorn_ceiling,
        }
        servers: dict[str, ServerProcess] = {}
        try:
            for name, port in ports.items():
                env = dict(common)
                if name in variants:
                    env = {**ours_env, **variants[name], "MCP_RESOURCE_URL": f"http://127.0.0.1:{port}/mcp"}
                servers[name] = starters[name](port, env, folder)
                started.append(servers[name])
            urls = {name: f"http://127.0.0.1:{port}/mcp" for name, port in ports.items()}
            capture_from = next(name for name in ("ours-full", "ours", *urls) if name in urls)
            requests = anyio.run(capture_requests, urls[capture_from], token)
            scripts = {name: lua_script(request, folder) for name, request in requests.items()}

            def serves(server: str, request: str) -> bool:
                if server not in SINGLE_REQUEST:
                    return True
                return request == (SINGLE_REQUEST[server] or next(iter(requests)))

            for name, url in urls.items():
                if name != "ceiling":
                    for request in requests.values():
                        if serves(name, request.name):
                            check_answer(url, request)
            rows: list[Row] = []
            # One cell per request kind and connection count, each server measured in turn; the order
            # of the servers turns by one place per cell and per round, so no server always runs first
            # (right after another server's load) or always last.
            cells = [
                (r, c, [s for s in urls if serves(s, r)])
                for c in (1, 16)
                for r in requests
                if not (r.startswith("streaming") and c == 1)
            ]
            for round_number in range(1, options.rounds + 1):
                plan = [
                    (server, request, connections)
                    for index, (request, connections, names) in enumerate(cells)
                    for server in rotated(names, round_number - 1 + index)
                ]
                for server, request, connections in plan:
                    shown = request if server != "ceiling" else "Flask 'ok'"
                    row = next(
                        (x for x in rows if (x.server, x.request, x.connections) == (server, shown, connections)),
                        None,
                    )
                    if row is None:
                        row = Row(server, shown, connections)
                        rows.append(row)
                    result = run_wrk(urls[server], scripts[request], connections, options.seconds, servers[server].pid)
                    row.rounds.append(result)
                    print(
                        f"round {round_number} {server:16} {row.request:28} c={connections:<2} "
                        f"{result['rps']:8.0f} req/s  p50 {result['p50_ms']:.2f} ms  p99 {result['p99_ms']:.2f} ms  "
                        f"CPU {result['cpu_ms_per_request']:.3f} ms/req",
                        flush=True,
                    )
            for name, url in urls.items():
                if name != "ceiling":
                    for request in requests.values():
                        if serves(name, request.name):
                            check_answer(url, request)
            results: dict[str, Any] = {
                "machine": {"cores": os.cpu_count(), "python": sys.version.split()[0]},
                "settings": vars(options),
                "rows": [asdict(row) for row in rows],
                "auth": auth_cost_us(issuer, folder),
            }
            measured = next((name for name in ("ours-full", "ours") if name in servers), None)
            if options.leak_requests and measured is not None:
                results["memory"] = leak_check(
                    urls[measured],
                    requests["tools/call 2026-07-28"],
                    servers[measured].pid,
                    folder,
                    options.leak_requests,
                )
                results["memory"]["server"] = measured
        finally:
            for process in started:
                process.stop()
    results["targets"] = [{"target": text, "met": met} for text, met in targets(rows, results.get("memory"))]
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (RESULTS / f"{stamp}.json").write_text(json.dumps(results, indent=2))
    (RESULTS / "latest.json").write_text(json.dumps(results, indent=2))
    chart(rows, RESULTS / "latest.png")
    print()
    print(report(rows, REFERENCE))
    print()
    print("authentication:", results["auth"])
    if "memory" in results:
        print("memory per worker (MiB):", results["memory"])
    print()
    for target in results["targets"]:
        print(("met    " if target["met"] else "NOT MET") + "  " + target["target"])
    print(f"raw results: {RESULTS / 'latest.json'}, chart: {RESULTS / 'latest.png'}")


if __name__ == "__main__":
    main()
