"""Where the time of one request goes, in-process (no network): ``python -m bench.profile_inprocess``.

Runs requests straight through the WSGI app and prints the CPU time per request and, with --profile,
the functions that cost most. CPU time of a single process is far steadier on a shared machine than
wall-clock throughput, so this is the tool for finding and checking optimisations.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import tempfile
import time

from werkzeug.test import EnvironBuilder

from app import create_app
from app.settings import Settings
from tests.support.issuer import MockIssuer
from tests.support.jsonrpc import HANDSHAKE
from tests.support.jsonrpc import MODERN
from tests.support.jsonrpc import request_body
from tests.support.jsonrpc import request_headers

AUDIENCE = "https://bench.example/mcp"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--sort", default="cumulative")
    parser.add_argument("--lean", action="store_true", help="audit log, metrics and rate limits off")
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE settings to add")
    parser.add_argument("--era", default=MODERN, choices=[MODERN, HANDSHAKE])
    parser.add_argument("--method", default="tools/call", choices=["tools/call", "tools/list"])
    options = parser.parse_args()
    with MockIssuer() as issuer, tempfile.TemporaryDirectory() as folder:
        settings = Settings.from_mapping(
            {
                "MCP_RESOURCE_URL": "http://localhost/mcp",
                "MCP_ISSUER": issuer.issuer,
                "MCP_AUDIENCE": AUDIENCE,
                "MCP_INSTANCE_PATH": folder,
                **({"MCP_AUDIT_LOG": "0", "MCP_METRICS": "0", "MCP_RATE_LIMIT": "off"} if options.lean else {}),
                **dict(item.split("=", 1) for item in options.env),
            }
        )
        app = create_app(settings)
        token = issuer.mint(AUDIENCE)
        params = {"name": "greet_user", "arguments": {"name": "bench"}} if options.method == "tools/call" else {}
        name = "greet_user" if options.method == "tools/call" else None
        body = json.dumps(request_body(options.method, params, era=options.era)).encode()
        headers = request_headers(options.method, name, era=options.era, token=token)
        environ = EnvironBuilder(path="/mcp", method="POST", headers=headers, data=body).get_environ()
        raw = environ["wsgi.input"].read()

        def one() -> None:
            env = dict(environ)
            env["wsgi.input"] = __import__("io").BytesIO(raw)
            chunks = app.wsgi_app(env, lambda status, headers, exc_info=None: None)
            try:
                b"".join(chunks)
            finally:
                if hasattr(chunks, "close"):
                    chunks.close()

        for _ in range(300):
            one()
        profiler = cProfile.Profile() if options.profile else None
        start_cpu, start_wall = time.process_time(), time.perf_counter()
        if profiler:
            profiler.enable()
        for _ in range(options.requests):
            one()
        if profiler:
            profiler.disable()
        cpu = (time.process_time() - start_cpu) / options.requests * 1e3
        wall = (time.perf_counter() - start_wall) / options.requests * 1e3
        print(f"{options.method} {options.era}: {cpu:.3f} ms CPU, {wall:.3f} ms wall per request")
        if profiler:
            pstats.Stats(profiler).sort_stats(options.sort).print_stats(45)
        app.extensions["mcp_bridge"].loops.close()


if __name__ == "__main__":
    main()
