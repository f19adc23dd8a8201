"""Health checks for load balancers and process supervisors.

``/healthz`` says the process answers (no I/O). ``/readyz`` says this worker
can verify tokens: 200 while signing keys are loaded, even if the last refresh
failed (a load balancer must not pull an instance that still works), 503 only
when it has none.
"""

from __future__ import annotations

from flask import Blueprint
from flask import Flask
from flask import Response
from flask import jsonify

from app.auth import public
from app.auth.jwks import KeyStore


def init_app(app: Flask, keys: KeyStore) -> None:
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
        status = keys.ensure_loaded()
        ready = status != "missing"
        response = jsonify(status="ready" if ready else "unavailable", signing_keys=status)
        response.headers["Cache-Control"] = "no-store"
        return response, 200 if ready else 503

    app.register_blueprint(blueprint)
