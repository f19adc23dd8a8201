"""Two test-only tools for stateful mode, served beside the examples: MCP_TOOLS=flask_mcp_examples:register,
tests.support.stateful_tools:register.

``wait_for_cancel`` shows from outside that a tool was cancelled (a file in the
instance folder); ``count_across_reconnect`` closes its own SSE stream mid-call
(SEP-1699 polling), so the client has to come back with Last-Event-ID for the
rest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import anyio
from pydantic import Field

from app.provider import Context
from app.provider import ScopedServer

CANCELLED_PREFIX = "cancelled-"


def cancelled_marker(instance_path: Path, marker: str) -> Path:
    return instance_path / f"{CANCELLED_PREFIX}{marker}"


def register(server: ScopedServer) -> None:
    @server.tool()
    async def wait_for_cancel(
        marker: Annotated[str, Field(pattern=r"^[a-z0-9-]{1,40}$", description="Names the file left on cancel")],
        ctx: Context,
    ) -> str:
        """Reports one step, then waits 30 s; cancelled, it leaves the file cancelled-<marker> in the instance path."""
        await ctx.report_progress(1, 2, "waiting to be cancelled")
        try:
            await anyio.sleep(30)
        except anyio.get_cancelled_exc_class():
            cancelled_marker(Path(server.instance_path), marker).write_text("cancelled")
            raise
        return "not cancelled"

    @server.tool()
    async def count_across_reconnect(n: Annotated[int, Field(ge=2, le=20)], ctx: Context) -> str:
        """Counts to n, 0.1 s a step; after step 1 it closes its own SSE stream (a no-op without resumability)."""
        for step in range(1, n + 1):
            await anyio.sleep(0.1)
            await ctx.report_progress(step, n, f"{step} of {n}")
            if step == 1:
                await ctx.close_sse_stream()
        return f"Counted to {n} across a reconnect."
