"""One abusive caller beside well-behaved ones, through the real gunicorn: ``python -m bench.hostile_load``.

A load test, not a timed test (about 80 seconds; everything on 127.0.0.1). For each of two deployments, the
server is started with the shipped gunicorn.conf.py and its shipped defaults (rate limits, failed-credentials
limit, per-caller caps) against a mock identity provider whose token introspection takes 200 ms, as a real
one far away would:

* stateless, 2 workers, introspection configured for opaque tokens;
* stateful (MCP_STATEFUL=1), its one worker.

Well-behaved callers, each with a token of its own, call ``greet_user`` (and one lists the tools with an
opaque token) at a steady 5 requests a second each, first alone ("quiet"), then while one abusive caller,
in a process of its own, does at the same time everything the review found would take the service from the
others:

* random opaque tokens, 20 a second, each of which would cost an introspection call;
* stateful: a flood of sessions (``initialize`` 50 times a second, never deleted) and of standalone GET
  streams on them (16 connections);
* 2 s in, once the measurement runs (their first burst is part of what it measures), a flood of long
  streams: 64 connections each trying to hold a ``count_to(50)`` (10 s of progress events), retrying as
  soon as Retry-After allows.

It reports the well-behaved callers' success rate and latency (p50, p95, p99) quiet and under abuse, what the
abuser got (admitted, refused by which cap or limit), and how many introspection calls were made. The target:
100 % success and a p99 under abuse within 2 times the quiet one. Results: a table on stdout and
bench/results/hostile-load.json; the README's Security section quotes them.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import secrets
import statistics
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench.run import cpu_seconds
from tests.support.issuer import MockIssuer
from tests.support.jsonrpc import HANDSHAKE
from tests.support.jsonrpc import request_body
from tests.support.jsonrpc import request_headers
from tests.support.load import children
from tests.support.servers import RunningServer
from tests.support.servers import start_app

RESULTS = Path(__file__).resolve().parent / "results"
INTROSPECTION_DELAY = 0.2
RATE = 5.0  # requests a second per well-behaved caller: within the default 600/minute
STREAMS_AFTER = 2.0
QUIET_SPREAD = 10
RAMP = 2.0  # seconds the abuser runs before the well-behaved callers are measured beside it
OPAQUE_TOKEN = "well-behaved-opaque-token-0123456789"
INITIALIZE = request_body(
    "initialize",
    {"protocolVersion": HANDSHAKE, "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}},
    era=HANDSHAKE,
)


@dataclass
class Sample:
    latency_ms: float
    ok: bool
    status: int | None


@dataclass
class Caller:
    """One well-behaved caller: its own connection, its own token, a fixed pace."""

    url: str
    token: str = field(repr=False)
    name: str
    session: str | None = None
    kind: str = "call"
    samples: list[Sample] = field(default_factory=list)

    def request(self) -> tuple[str, bytes, dict[str, str]]:
        if self.kind == "list":
            return (
                "/mcp",
                json.dumps(request_body("tools/list")).encode(),
                request_headers("tools/list", token=self.token),
            )
        era = HANDSHAKE if self.session else "2026-07-28"
        body = request_body("tools/call", {"name": "greet_user", "arguments": {"name": self.name}}, era=era)
        headers = request_headers("tools/call", "greet_user", era=era, token=self.token)
        if self.session:
            headers["Mcp-Session-Id"] = self.session
        return "/mcp", json.dumps(body).encode(), headers

    def expected(self, data: bytes) -> bool:
        return b'"greet_user"' in data if self.kind == "list" else f"Hello, {self.name}!".encode() in data

    def run(self, stop: threading.Event, record: threading.Event) -> None:
        parts = urlsplit(self.url)
        connection: http.client.HTTPConnection | None = None
        interval = 1 / RATE
        next_at = time.monotonic() + secrets.randbelow(1000) / 1000 * interval
        while not stop.is_set():
            wait = next_at - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            next_at += interval
            path, body, headers = self.request()
            started = time.monotonic()
            status = None
            ok = False
            try:
                if connection is None:
                    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
                connection.request("POST", path, body=body, headers=headers)
                response = connection.getresponse()
                data = response.read()
                status = response.status
                ok = status == 200 and self.expected(data)
            except (OSError, http.client.HTTPException):
                if connection is not None:
                    connection.close()
                connection = None
            if record.is_set():
                self.samples.append(Sample((time.monotonic() - started) * 1000, ok, status))
        if connection is not None:
            connection.close()


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else float("nan")


def summary(callers: list[Caller]) -> dict[str, Any]:
    samples = [s for caller in callers for s in caller.samples]
    latencies = [s.latency_ms for s in samples]
    failed = Counter(str(s.status) for s in samples if not s.ok)
    return {
        "requests": len(samples),
        "success_rate": sum(s.ok for s in samples) / len(samples) if samples else 0.0,
        "p50_ms": statistics.median(latencies) if latencies else float("nan"),
        "p95_ms": percentile(latencies, 0.95),
        "p99_ms": percentile(latencies, 0.99),
        "max_ms": max(latencies) if latencies else float("nan"),
        "failures": dict(failed),
    }


# -- the abusive caller, in a process of its own (its threads must not slow the well-behaved callers' clock)


def _post(url: str, body: bytes, headers: dict[str, str], *, read: bool = True) -> tuple[int, dict[str, str], bytes]:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=60)
    try:
        connection.request("POST", parts.path, body=body, headers={**headers, "Connection": "close"})
        response = connection.getresponse()
        data = response.read() if read else b""
        return response.status, dict(response.getheaders()), data
    finally:
        connection.close()


def _refusal(status: int, data: bytes) -> str:
    if status != 429:
        return str(status)
    try:
        answer = json.loads(data)
    except ValueError:
        return "429"
    if "cap" in answer:
        return f"429 cap {answer['cap']}"
    return "429 failed-credentials limit" if "refused credentials" in answer["error_description"] else "429 rate limit"


def _retry_after(headers: dict[str, str]) -> float:
    return float(next((v for k, v in headers.items() if k.lower() == "retry-after"), "1"))


def abuse(url: str, token: str, stateful: bool, seconds: float, results: Any) -> None:
    """Everything at once, for ``seconds``; what happened goes to the ``results`` dict (a manager's)."""
    stop = time.monotonic() + seconds
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()

    def count(what: str) -> None:
        with lock:
            outcomes[what] += 1

    def opaque_tokens() -> None:
        while time.monotonic() < stop:
            started = time.monotonic()
            headers = request_headers("tools/list", token=secrets.token_urlsafe(24))
            try:
                status, _, data = _post(url, json.dumps(request_body("tools/list")).encode(), headers)
                count("opaque " + _refusal(status, data))
            except OSError:
                count("opaque connection error")
            time.sleep(max(0.0, 0.2 - (time.monotonic() - started)))  # 5 a second per thread, 4 threads

    def hold_stream(label: str, method: str, headers: dict[str, str], body: bytes | None = None) -> None:
        """Open one stream and read it until the run ends; refused, wait as long as Retry-After says."""
        parts = urlsplit(url)
        try:
            connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=60)
            connection.request(method, parts.path, body=body, headers=headers)
            response = connection.getresponse()
            if response.status == 200:
                count(label + " admitted")
                while time.monotonic() < stop and response.read1(4096):
                    pass
                connection.close()
                return
            data = response.read()
            connection.close()
            count(label + " " + _refusal(response.status, data))
            time.sleep(_retry_after(dict(response.getheaders())))
        except (OSError, http.client.HTTPException):
            count(label + " connection error")
            time.sleep(0.5)

    def long_streams() -> None:
        # Once the measurement runs (their first burst is part of the abuse); stateful: after the session flood
        # has met its own cap.
        time.sleep(STREAMS_AFTER)
        body = request_body("tools/call", {"name": "count_to", "arguments": {"n": 50}, "_meta": {"progressToken": 1}})
        headers = request_headers("tools/call", "count_to", token=token)
        while time.monotonic() < stop:
            hold_stream("stream", "POST", headers, json.dumps(body).encode())

    sessions: list[str] = []

    def session_flood() -> None:
        headers = request_headers("initialize", era=HANDSHAKE, token=token)
        while time.monotonic() < stop:
            started = time.monotonic()
            try:
                status, answer_headers, data = _post(url, json.dumps(INITIALIZE).encode(), headers)
                count("initialize " + _refusal(status, data))
                session = next((v for k, v in answer_headers.items() if k.lower() == "mcp-session-id"), None)
                if status == 200 and session:
                    with lock:
                        sessions.append(session)
            except OSError:
                count("initialize connection error")
            time.sleep(max(0.0, 0.02 - (time.monotonic() - started)))

    def get_streams(index: int) -> None:
        while time.monotonic() < stop:
            with lock:
                session = sessions[index % len(sessions)] if sessions else None
            if session is None:
                time.sleep(0.2)
                continue
            headers = {
                **request_headers("ping", era=HANDSHAKE, token=token),
                "Accept": "text/event-stream",
                "Mcp-Session-Id": session,
            }
            hold_stream("GET stream", "GET", headers)

    threads = [threading.Thread(target=opaque_tokens, daemon=True) for _ in range(4)]
    threads += [threading.Thread(target=long_streams, daemon=True) for _ in range(64)]
    if stateful:
        threads.append(threading.Thread(target=session_flood, daemon=True))
        threads += [threading.Thread(target=get_streams, args=(n,), daemon=True) for n in range(16)]
    for thread in threads:
        thread.start()
    # Not joined: a thread may be holding a stream that the server has no reason to end. They die with the process.
    time.sleep(max(0.0, stop - time.monotonic()) + 0.5)
    with lock:
        results.update(outcomes)


# -- one deployment, quiet then abused


def warm_up(server: RunningServer, callers: list[Caller]) -> None:
    for caller in callers:
        if caller.kind == "session":
            status, headers, _ = _post(
                server.url,
                json.dumps(INITIALIZE).encode(),
                request_headers("initialize", era=HANDSHAKE, token=caller.token),
            )
            assert status == 200, status
            caller.session = next(v for k, v in headers.items() if k.lower() == "mcp-session-id")
            caller.kind = "call"
    for caller in callers:  # each token verified (and the opaque one introspected) once, before measuring
        path, body, headers = caller.request()
        status, _, data = _post(server.url, body, headers)
        assert status == 200 and caller.expected(data), (status, data[:200])


def measure(
    callers: list[Caller], seconds: float, abuser: multiprocessing.Process | None, server_pid: int
) -> dict[str, Any]:
    for caller in callers:
        caller.samples.clear()
    stop, record = threading.Event(), threading.Event()
    threads = [threading.Thread(target=caller.run, args=(stop, record), daemon=True) for caller in callers]
    for thread in threads:
        thread.start()
    if abuser is not None:
        abuser.start()
        time.sleep(RAMP)  # the abuser's floods are under way
    server = [server_pid, *children(server_pid)]
    cpu_before, abuser_before = cpu_seconds(server), cpu_seconds([abuser.pid] if abuser and abuser.pid else [])
    record.set()
    time.sleep(seconds)
    record.clear()
    result = summary(callers)
    # Cores kept busy meanwhile: the server's processes, and the abuser's (it runs on the same 2 cores).
    result["server_cores"] = (cpu_seconds(server) - cpu_before) / seconds
    if abuser is not None and abuser.pid:
        result["abuser_cores"] = (cpu_seconds([abuser.pid]) - abuser_before) / seconds
    stop.set()
    for thread in threads:
        thread.join(40)
    if abuser is not None:
        abuser.join(30)
    return result


def scenario(
    name: str, issuer: MockIssuer, folder: Path, seconds: float, callers_count: int, **env: str
) -> dict[str, Any]:
    stateful = env.get("MCP_STATEFUL") == "1"
    place = folder / ("stateful" if stateful else "stateless")
    place.mkdir(parents=True, exist_ok=True)
    server = start_app(issuer, place, workers=1 if stateful else 2, **env)
    context = multiprocessing.get_context("spawn")
    try:
        callers = [
            Caller(server.url, server.token(sub=f"user-{n}"), f"user{n}", kind="session" if stateful else "call")
            for n in range(callers_count)
        ]
        if not stateful:
            issuer.opaque_tokens[OPAQUE_TOKEN] = {
                "active": True,
                "iss": issuer.issuer,
                "sub": "opaque-user",
                "aud": server.url,
                "exp": int(time.time()) + 3600,
            }
            callers.append(Caller(server.url, OPAQUE_TOKEN, "opaque", kind="list"))
        warm_up(server, callers)
        quiet = measure(callers, seconds, None, server.process.pid)
        introspections = issuer.introspections()
        with context.Manager() as manager:
            outcomes = manager.dict()
            abuser = context.Process(
                target=abuse, args=(server.url, server.token(sub="abuser"), stateful, RAMP + seconds, outcomes)
            )
            abused = measure(callers, seconds, abuser, server.process.pid)
            abuser_outcomes = dict(sorted(outcomes.items()))
        return {
            "deployment": name,
            "env": env,
            "callers": len(callers),
            "quiet": quiet,
            "abused": abused,
            "abuser": abuser_outcomes,
            "introspection_calls_under_abuse": issuer.introspections() - introspections,
            "p99_ratio": abused["p99_ms"] / quiet["p99_ms"] if quiet["p99_ms"] else float("nan"),
        }
    finally:
        server.stop()


def report(results: list[dict[str, Any]]) -> str:
    lines = [
        "| deployment | phase | requests | success | p50 ms | p95 ms | p99 ms | p99 vs quiet | server CPU "
        "| abuser CPU |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        for phase in ("quiet", "abused"):
            data = result[phase]
            ratio = f"{result['p99_ratio']:.2f}x" if phase == "abused" else ""
            abuser = f"{data['abuser_cores']:.2f} cores" if "abuser_cores" in data else ""
            lines.append(
                f"| {result['deployment']} | {phase} | {data['requests']} | {data['success_rate'] * 100:.1f} % | "
                f"{data['p50_ms']:.1f} | {data['p95_ms']:.1f} | {data['p99_ms']:.1f} | {ratio} | "
                f"{data['server_cores']:.2f} cores | {abuser} |"
            )
    for result in results:
        lines.append("")
        lines.append(
            f"{result['deployment']}, the abuser got: " + ", ".join(f"{k}: {v}" for k, v in result["abuser"].items())
        )
        lines.append(f"introspection calls during the abuse: {result['introspection_calls_under_abuse']}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # 15 s: each phase's p99 is then its 8th-worst answer of about 800, not its 3rd-worst of 275 (at 5 s one
    # slow answer moved it by 2x from run to run), and the abuser's 10 s streams are started twice inside it.
    parser.add_argument("--seconds", type=float, default=15, help="length of each measured phase")
    parser.add_argument("--callers", type=int, default=10, help="well-behaved callers (each its own token)")
    parser.add_argument("--only", choices=["stateless", "stateful"], help="run one deployment only")
    parser.add_argument("--env", action="append", default=[], help="NAME=value for the servers (repeatable)")
    options = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="mcp-hostile-"))
    results = []
    with MockIssuer() as issuer:
        issuer.introspection_delay = INTROSPECTION_DELAY
        client_id, secret = issuer.introspection_client
        introspection = {
            "MCP_INTROSPECTION_URL": issuer.introspection_url,
            "MCP_INTROSPECTION_CLIENT_ID": client_id,
            "MCP_INTROSPECTION_CLIENT_SECRET": secret,
            "MCP_LOG_LEVEL": "warning",
            "MCP_ACCESS_LOG": "off",
            "MCP_AUDIT_LOG": "0",
        }
        extra = dict(item.split("=", 1) for item in options.env)
        if options.only != "stateful":
            stateless = {**introspection, **extra}
            results.append(
                scenario("stateless, 2 workers", issuer, folder, options.seconds, options.callers, **stateless)
            )
        if options.only != "stateless":
            stateful = {"MCP_STATEFUL": "1", **introspection, **extra}
            results.append(scenario("stateful, 1 worker", issuer, folder, options.seconds, options.callers, **stateful))
    met = all(r["abused"]["success_rate"] == 1.0 and r["p99_ratio"] <= 2.0 for r in results)
    output = {
        "machine": {"cores": os.cpu_count()},
        "settings": vars(options),
        "results": results,
        "target_met": met,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "hostile-load.json").write_text(json.dumps(output, indent=2))
    print(report(results))
    print()
    print(("met" if met else "NOT MET") + ": 100 % success and p99 within 2x the quiet figure, under abuse")
    # A quiet phase whose p99 is far off its median was disturbed by something else on the machine: the
    # ratio against it means little.
    for result in results:
        if result["quiet"]["p99_ms"] > QUIET_SPREAD * result["quiet"]["p50_ms"]:
            print(f"{result['deployment']}: the quiet phase was disturbed (p99 over {QUIET_SPREAD}x p50); run again")
    print(f"raw results: {RESULTS / 'hostile-load.json'}")


if __name__ == "__main__":
    main()
