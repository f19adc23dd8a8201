"""Health checks for load balancers and process supervisors.

``/healthz`` says the process answers (no I/O). ``/readyz`` says this worker
can verify tokens: 200 while signing keys are loaded, even if the last refresh
failed (a load balancer must not pull an instance that still works), 503 only
when it has none.
"""

from __future__ import annotations

from collections.abc import Sequence

from flask import Blueprint
from flask import Flask
from flask import Response
from flask import jsonify

from app.auth import public
from app.auth.jwks import KeyStore


def init_app(app: Flask, key_stores: Sequence[KeyStore]) -> None:
    blueprint = Blueprint("health", __name__)

    @blueprint.get("/healthz")
    @public
    def healthz() -> Response:
        response = jsonify(status="ok")
        response.headers["Cache-Control"] = "no-store"
        return response

    @blueprint.get("/readyz")
    @public
    def readyz() -> tuple[Response, int]:
        statuses = [keys.ensure_loaded() for keys in key_stores]
        # Ready while tokens of at least one issuer can be verified (with no issuer, introspection alone).
        ready = not statuses or any(status != "missing" for status in statuses)
        summary = "fresh" if statuses and all(s == "fresh" for s in statuses) else "stale" if ready else "missing"
        response = jsonify(status="ready" if ready else "unavailable", signing_keys=summary if statuses else "none")
        response.headers["Cache-Control"] = "no-store"
        return response, 200 if ready else 503

    app.register_blueprint(blueprint)
