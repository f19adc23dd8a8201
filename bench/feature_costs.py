"""What each shipped feature costs per request, in-process: ``python -m bench.feature_costs``.

The features a deployment has on (``ours-full`` in bench/run.py) are measured one by
one, as the difference in CPU time per request between the lean app and the same
app with only that feature on, hooks included: the audit log line, Prometheus
counters in multiprocess mode, the per-caller rate limit, the per-caller caps
(requests in flight), and all of them together.
The SDK's handler is replaced by a trivial ASGI answer (``--with-sdk`` keeps it), so
the differences stand out of a much smaller total. The access log, written by the
gunicorn worker rather than the app, is measured directly: gunicorn's own logger
against ours (app/serving/access_log.py), each writing the shipped format to a file.
CPU time of one process, minimum over interleaved rounds: steady on a shared machine.
"""

from __future__ import annotations

import os
import tempfile

# prometheus_client picks multiprocess mode when it is imported, as under gunicorn.
_METRICS_DIR = tempfile.mkdtemp(prefix="mcp-bench-metrics-")
os.environ["PROMETHEUS_MULTIPROC_DIR"] = _METRICS_DIR

import argparse  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import shutil  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from datetime import timedelta  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from werkzeug.test import EnvironBuilder  # noqa: E402

from tests.support.issuer import MockIssuer  # noqa: E402
from tests.support.jsonrpc import MODERN  # noqa: E402
from tests.support.jsonrpc import request_body  # noqa: E402
from tests.support.jsonrpc import request_headers  # noqa: E402

AUDIENCE = "https://bench.example/mcp"
CAPS_OFF = {"MCP_CAP_IN_FLIGHT": "off", "MCP_CAP_STREAMS": "off", "MCP_CAP_SESSIONS": "off"}
LEAN = {"MCP_AUDIT_LOG": "0", "MCP_METRICS": "0", "MCP_RATE_LIMIT": "off", **CAPS_OFF}
VARIANTS = {
    "lean": LEAN,
    "audit log": {**LEAN, "MCP_AUDIT_LOG": "1"},
    "metrics": {**LEAN, "MCP_METRICS": "1"},
    "rate limit": {**LEAN, "MCP_RATE_LIMIT": "1000000/minute"},
    "caps": {k: v for k, v in LEAN.items() if k not in CAPS_OFF},
    "all of them": {"MCP_RATE_LIMIT": "1000000/minute"},
    "lean again": LEAN,
}
SHIPPED_ACCESS_FORMAT = '%(h)s %(p)s "%(m)s %(U)s %(H)s" %(s)s %(B)s %(M)sms "%(a)s"'


def trivial_sdk() -> None:
    from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

    async def answer(self: Any, scope: Any, receive: Any, send: Any) -> None:
        await receive()
        headers = [(b"content-type", b"application/json"), (b"content-length", b"2")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"{}"})

    StreamableHTTPSessionManager.handle_request = answer  # type: ignore[method-assign]


def request_runner(app: Any, token: str, method: str) -> Callable[[], None]:
    params = {"name": "greet_user", "arguments": {"name": "bench"}} if method == "tools/call" else {}
    body = json.dumps(request_body(method, params, era=MODERN)).encode()
    headers = request_headers(method, "greet_user" if method == "tools/call" else None, era=MODERN, token=token)
    environ = EnvironBuilder(path="/mcp", method="POST", headers=headers, data=body).get_environ()

    def one() -> None:
        env = dict(environ)
        env["wsgi.input"] = io.BytesIO(body)
        status: list[str] = []
        chunks = app.wsgi_app(env, lambda s, h, e=None: status.append(s))
        try:
            b"".join(chunks)
        finally:
            if hasattr(chunks, "close"):
                chunks.close()
        if not status[0].startswith("200"):
            raise SystemExit(f"the benchmark request was refused: {status[0]}")

    return one


def cpu_us(fn: Callable[[], None], number: int) -> float:
    start = time.process_time()
    for _ in range(number):
        fn()
    return (time.process_time() - start) / number * 1e6


def app_costs(issuer: MockIssuer, folder: Path, options: argparse.Namespace) -> dict[str, float]:
    from app import create_app
    from app import stop_worker
    from app.settings import Settings

    token = issuer.mint(AUDIENCE)
    runners, apps = {}, []
    audit_file = open(folder / "audit.log", "w")  # closed below
    for name, extra in VARIANTS.items():
        settings = Settings.from_mapping(
            {
                "MCP_RESOURCE_URL": "http://localhost/mcp",
                "MCP_ISSUER": issuer.issuer,
                "MCP_AUDIENCE": AUDIENCE,
                "MCP_INSTANCE_PATH": str(folder / name.replace(" ", "-")),
                **extra,
            }
        )
        app = create_app(settings)
        apps.append(app)
        runners[name] = request_runner(app, token, options.method)
    for handler in logging.getLogger("app.audit").handlers:  # the audit line goes to a file, not the terminal
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(audit_file)
    for run in runners.values():
        for _ in range(300):
            run()
    best: dict[str, float] = {}
    for _ in range(options.rounds):
        for name, run in runners.items():
            best[name] = min(best.get(name, float("inf")), cpu_us(run, options.requests))
    for app in apps:
        stop_worker(app)
    audit_file.close()
    return best


def access_log_costs(folder: Path, options: argparse.Namespace) -> dict[str, float]:
    from gunicorn.config import Config
    from gunicorn.glogging import Logger

    from app.serving.access_log import AccessLogger

    class Response:
        status = "200 OK"
        sent = 512
        headers = [("Content-Type", "application/json"), ("Content-Length", "512"), ("X-Request-Id", "r" * 32)]

    class Request:
        headers = [("HOST", "127.0.0.1:8000"), ("ACCEPT", "application/json, text/event-stream")] + [
            (f"X-HEADER-{n}", "value") for n in range(6)
        ]

    environ = {
        "REMOTE_ADDR": "127.0.0.1",
        "REMOTE_PORT": "40000",
        "REQUEST_METHOD": "POST",
        "RAW_URI": "/mcp",
        "PATH_INFO": "/mcp",
        "QUERY_STRING": "",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_USER_AGENT": "python-httpx/2.16",
        **{f"HTTP_X_HEADER_{n}": "value" for n in range(6)},
    }
    loggers = {}
    for name, logger_class in (("gunicorn's logger", Logger), ("ours (app/serving/access_log.py)", AccessLogger)):
        cfg = Config()
        cfg.set("accesslog", str(folder / f"access-{logger_class.__name__}.log"))
        cfg.set("access_log_format", SHIPPED_ACCESS_FORMAT)
        loggers[name] = logger_class(cfg)
    took = timedelta(microseconds=1234)
    best: dict[str, float] = {}
    for _ in range(options.rounds):
        for name, logger in loggers.items():
            best[name] = min(
                best.get(name, float("inf")),
                cpu_us(lambda logger=logger: logger.access(Response(), Request(), environ, took), options.requests),
            )
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--method", default="tools/list", choices=["tools/list", "tools/call"])
    parser.add_argument("--with-sdk", action="store_true", help="keep the SDK's handler instead of a trivial answer")
    options = parser.parse_args()
    logging.getLogger("app").setLevel(logging.WARNING)
    if not options.with_sdk:
        trivial_sdk()
    folder = Path(tempfile.mkdtemp(prefix="mcp-bench-features-"))
    try:
        with MockIssuer() as issuer:
            app = app_costs(issuer, folder, options)
        access = access_log_costs(folder, options)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        shutil.rmtree(_METRICS_DIR, ignore_errors=True)
    lean = app["lean"]
    print(f"{options.method}, {'with the SDK' if options.with_sdk else 'the SDK replaced by a trivial answer'}:")
    print(f"  lean app: {lean:.1f} us CPU per request")
    for name in ("audit log", "metrics", "rate limit", "caps", "all of them", "lean again"):
        print(f"  {name:<12} +{app[name] - lean:5.1f} us per request")
    print("access log line (shipped format, to a file):")
    for name, cost in access.items():
        print(f"  {name:<34} {cost:5.1f} us per request")


if __name__ == "__main__":
    main()
