"""What DPoP (RFC 9449) costs per request, in-process: ``python -m bench.dpop_cost``.

Runs the authentication hook (``BearerAuthentication.authenticate``, the one
``before_request`` of every MCP request) on prebuilt ``tools/list`` requests:
once with a plain Bearer token, once with a DPoP-bound token and a fresh proof
per request, and prints the CPU microseconds per request of each (medians of
``--rounds``), the difference, and ``ProofVerifier.verify`` on its own. The
proofs are signed before the clock starts (signing is the client's cost); the
access token is verified once beforehand, as a warm worker would have, so both
rows show what every later request costs. No network: the mock issuer serves
the keys on loopback once, and the replay cache is the per-worker memory one
unless ``--env MCP_RATE_LIMIT_STORAGE=redis://...`` says otherwise.

The benchmark table's DPoP row comes from here (bench/run.py measures whole
requests under gunicorn and is left as it is):

    python -m bench.dpop_cost --requests 5000 --rounds 5 [--alg ES256|PS256|RS256|Ed25519] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

from flask import Flask
from werkzeug.test import EnvironBuilder

from app import create_app
from app import stop_worker
from app.auth.dpop import normalize_htu
from app.settings import Settings
from tests.support.dpop import DPoPKey
from tests.support.issuer import MockIssuer
from tests.support.jsonrpc import request_body
from tests.support.jsonrpc import request_headers

RESOURCE = "http://localhost/mcp"
KINDS = {"ES256": "EC", "ES384": "EC", "PS256": "RSA", "RS256": "RSA", "Ed25519": "OKP"}


def environ(token: str, scheme: str = "Bearer", proof: str | None = None) -> dict[str, Any]:
    headers = {**request_headers("tools/list"), "Authorization": f"{scheme} {token}"}
    if proof is not None:
        headers["DPoP"] = proof
    body = json.dumps(request_body("tools/list")).encode()
    return EnvironBuilder(path="/mcp", method="POST", headers=headers, data=body).get_environ()


def per_request(app: Flask, environs: list[dict[str, Any]]) -> float:
    """CPU microseconds per request of the authentication hook, request context included."""
    authenticate = app.extensions["mcp_auth"].authenticate
    start = time.process_time()
    for env in environs:
        with app.request_context(env):
            refusal = authenticate()
            assert refusal is None, refusal.get_data(as_text=True)
    return (time.process_time() - start) / len(environs) * 1e6


def context_only(app: Flask, environs: list[dict[str, Any]]) -> float:
    """The request context alone, the floor under both rows."""
    start = time.process_time()
    for env in environs:
        with app.request_context(env):
            pass
    return (time.process_time() - start) / len(environs) * 1e6


def median(rounds: int, run: Callable[[], float]) -> float:
    return statistics.median(run() for _ in range(rounds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests per round and variant")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--alg", default="ES256", choices=sorted(KINDS), help="the client's DPoP key")
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE settings to add")
    parser.add_argument("--json", help="also write the results to this file")
    options = parser.parse_args()

    with MockIssuer() as issuer, tempfile.TemporaryDirectory() as folder:
        settings = Settings.from_mapping(
            {
                "MCP_RESOURCE_URL": RESOURCE,
                "MCP_ISSUER": issuer.issuer,
                "MCP_INSTANCE_PATH": folder,
                "MCP_RATE_LIMIT": "off",  # thousands of requests from one caller would be refused
                **dict(item.split("=", 1) for item in options.env),
            }
        )
        app = create_app(settings)
        key = DPoPKey.generate(KINDS[options.alg], options.alg)
        bearer_token = issuer.mint(RESOURCE)
        bound_token = issuer.mint(RESOURCE, cnf={"jkt": key.jkt})

        def proofs() -> list[str]:
            return [key.proof("POST", RESOURCE, access_token=bound_token) for _ in range(options.requests)]

        def bearer_round() -> float:
            return per_request(app, [environ(bearer_token) for _ in range(options.requests)])

        def dpop_round() -> float:
            return per_request(app, [environ(bound_token, "DPoP", proof) for proof in proofs()])

        def floor_round() -> float:
            return context_only(app, [environ(bearer_token) for _ in range(options.requests)])

        verifier = app.extensions["mcp_dpop"].verifier
        url = normalize_htu(RESOURCE)

        def verify_round() -> float:
            batch = proofs()
            start = time.process_time()
            for proof in batch:
                verifier.verify([proof], method="POST", url=url, access_token=bound_token)
            return (time.process_time() - start) / len(batch) * 1e6

        # Warm up: keys loaded, both tokens verified and cached, the proof key imported once.
        per_request(app, [environ(bearer_token), environ(bound_token, "DPoP", proofs()[0])])
        results = {
            "alg": options.alg,
            "requests_per_round": options.requests,
            "rounds": options.rounds,
            "replay_cache": settings.rate_limit_storage.partition("://")[0],
            "request_context_us": median(options.rounds, floor_round),
            "bearer_us": median(options.rounds, bearer_round),
            "dpop_us": median(options.rounds, dpop_round),
            "proof_verify_us": median(options.rounds, verify_round),
        }
        results["dpop_extra_us"] = results["dpop_us"] - results["bearer_us"]
        stop_worker(app)

    print(f"authentication hook, CPU per request (median of {options.rounds} x {options.requests}):")
    print(f"  request context alone        {results['request_context_us']:8.1f} us")
    print(f"  Bearer, unbound token        {results['bearer_us']:8.1f} us")
    print(f"  DPoP, {options.alg:<8} proof         {results['dpop_us']:8.1f} us")
    print(f"  DPoP adds                    {results['dpop_extra_us']:8.1f} us")
    print(
        f"  ProofVerifier.verify alone   {results['proof_verify_us']:8.1f} us  ({results['replay_cache']} replay cache)"
    )
    if options.json:
        with open(options.json, "w") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
