"""A tool that takes its time, so streaming progress can be seen."""

from __future__ import annotations

from typing import Annotated

import anyio
from pydantic import Field

from app.provider import Context
from app.provider import ScopedServer

STEP_SECONDS = 0.2


def register(server: ScopedServer) -> None:
    @server.tool()
    async def count_to(n: Annotated[int, Field(ge=1, le=50, description="Count from 1 to n")], ctx: Context) -> str:
        """Count from 1 to n, one progress notification per step about 0.2 s apart."""
        for step in range(1, n + 1):
            await anyio.sleep(STEP_SECONDS)
            await ctx.report_progress(step, n, f"{step} of {n}")
        return f"Counted to {n}."
