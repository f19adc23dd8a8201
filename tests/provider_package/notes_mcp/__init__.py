"""Notes, one list per user: two tools, a resource and a prompt, each behind the scope it needs."""

from __future__ import annotations

import os
import sqlite3
from contextlib import closing

from app.provider import Context
from app.provider import ResourceNotFoundError
from app.provider import ScopedServer
from app.provider import ToolError
from app.provider import current_principal


def register(server: ScopedServer) -> None:
    # Storage and settings are the provider's own: its variable, read where the server read its own.
    path = server.env.get("NOTES_DATABASE") or os.path.join(server.instance_path, "notes.sqlite3")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, owner TEXT, text TEXT)")

    def connect() -> sqlite3.Connection:
        return sqlite3.connect(path, timeout=10)

    def owner() -> str:
        issuer, subject = current_principal().key  # sub is unique per issuer only
        return f"{issuer} {subject}"

    server.add_instructions("Notes of the signed-in user: add_note writes one, list_notes reads them.")
    server.describe_scopes({"notes:read": "Read your notes", "notes:write": "Add notes (and read them)"})
    server.imply_scopes({"notes:write": ["notes:read"]})

    @server.tool(scopes=["notes:write"])
    def add_note(text: str) -> int:
        """Add a note; returns its id."""
        if not text.strip():
            raise ToolError("a note needs some text")
        with closing(connect()) as db, db:
            return int(db.execute("INSERT INTO notes (owner, text) VALUES (?, ?)", (owner(), text)).lastrowid or 0)

    @server.tool(scopes=["notes:read"])
    async def list_notes(ctx: Context) -> list[str]:
        """Your notes, oldest first."""
        await ctx.report_progress(0, 1)
        with closing(connect()) as db:
            rows = db.execute("SELECT text FROM notes WHERE owner = ? ORDER BY id", (owner(),)).fetchall()
        return [text for (text,) in rows]

    @server.resource("note://{id}", scopes=["notes:read"], mime_type="text/plain")
    def note(id: int) -> str:
        with closing(connect()) as db:
            row = db.execute("SELECT text FROM notes WHERE id = ? AND owner = ?", (id, owner())).fetchone()
        if row is None:
            raise ResourceNotFoundError(f"no note {id}")
        return str(row[0])

    @server.prompt(scopes=["notes:read"])
    def summarize_notes() -> str:
        """Ask the model to summarize your notes."""
        return "Summarize my notes (list_notes has them) in three sentences."
