"""The features' one after_request hook: finishers in Flask's hook order, their close callbacks in one."""

from __future__ import annotations

from typing import Any

from flask import Flask
from flask import Request
from flask import Response

from app import request_end


def test_finishers_run_as_after_request_hooks_would_and_close_together() -> None:
    app = Flask(__name__)
    seen: list[str] = []

    def finisher(name: str, closes: bool) -> request_end.Finisher:
        def finish(response: Response, req: Request, ctx: Any) -> request_end.Closer | None:
            seen.append(f"{name} {req.path} {ctx.mark}")
            response.headers.add("X-Finished", name)
            return (lambda: seen.append(f"close {name}")) if closes else None

        return finish

    for name, closes in (("first", True), ("second", False), ("third", True)):
        request_end.on_response(app, finisher(name, closes))

    @app.get("/x")
    def view() -> str:
        from flask import g

        g.mark = "g"
        return "ok"

    assert len(app.after_request_funcs[None]) == 1  # one hook, whatever the number of finishers
    response = app.test_client().get("/x")
    assert (response.status_code, response.get_data(as_text=True)) == (200, "ok")
    assert response.headers.getlist("X-Finished") == ["third", "second", "first"]
    assert seen == ["third /x g", "second /x g", "first /x g"]
    response.close()
    assert seen[3:] == ["close third", "close first"]
