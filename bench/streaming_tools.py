"""A tool provider for the benchmark's streaming row: progress notifications as fast as the server sends them.

``count_to`` (the example) waits 0.2 s between steps, which measures the clock,
not the server. ``report_steps`` sends its progress notifications back to back,
so a call is a Server-Sent Events answer of ``steps`` notifications and a result,
and the row measures what streaming them costs. Both servers of the benchmark
load it next to the examples.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from app.provider import Context
from app.provider import ScopedServer


def register(server: ScopedServer) -> None:
    @server.tool()
    async def report_steps(steps: Annotated[int, Field(ge=1, le=100)], ctx: Context) -> str:
        """Report ``steps`` progress notifications at once, then answer."""
        for step in range(1, steps + 1):
            await ctx.report_progress(step, steps, f"step {step}")
        return f"Reported {steps} steps."
