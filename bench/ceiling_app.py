"""The ceiling: a bare Flask view returning "ok", under the same gunicorn settings as our server."""

from __future__ import annotations

from flask import Flask

app = Flask(__name__)


@app.post("/mcp")
def ok() -> str:
    return "ok"
