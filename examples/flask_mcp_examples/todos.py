"""A todo list per user, in SQLite: tools, a resource and a prompt, each behind its own scope.

Rows are keyed by (issuer, subject): ``sub`` is unique only per issuer, and a
user never sees or deletes another user's todos. A todo that belongs to
someone else is reported exactly like one that does not exist.
"""

from __future__ import annotations

import sqlite3
import time
from contextlib import closing
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel
from pydantic import Field

from app.provider import ResourceNotFoundError
from app.provider import ScopedServer
from app.provider import ToolError
from app.provider import current_principal

MAX_TITLE_LENGTH = 500
BUSY_TIMEOUT = 10.0

SCHEMA = """
CREATE TABLE IF NOT EXISTS todos (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    issuer TEXT NOT NULL,
    subject TEXT NOT NULL,
    title TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS todos_owner ON todos (issuer, subject);
"""


class Todo(BaseModel):
    id: int
    title: str
    created_at: int


class TodoList(BaseModel):
    todos: list[Todo]


class DeletedTodo(BaseModel):
    deleted: int


class TodoStore:
    """SQLite storage; one short-lived connection per call, so any thread may use it."""

    def __init__(self, path: str) -> None:
        self.path = path
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as db:
            db.executescript(SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        # SQLite's default journal: its locks wait out the busy timeout, so workers that boot together and
        # create the schema at once take turns. (A switch to WAL is refused at once instead, without waiting:
        # it once cost a worker its start.)
        return sqlite3.connect(self.path, timeout=BUSY_TIMEOUT)

    def list(self, owner: tuple[str, str]) -> list[Todo]:
        with closing(self._connect()) as db:
            rows = db.execute(
                "SELECT id, title, created_at FROM todos WHERE issuer = ? AND subject = ? ORDER BY id", owner
            ).fetchall()
        return [Todo(id=row[0], title=row[1], created_at=row[2]) for row in rows]

    def add(self, owner: tuple[str, str], title: str) -> Todo:
        created_at = int(time.time())
        with closing(self._connect()) as db, db:
            cursor = db.execute(
                "INSERT INTO todos (issuer, subject, title, created_at) VALUES (?, ?, ?, ?)",
                (*owner, title, created_at),
            )
        assert cursor.lastrowid is not None
        return Todo(id=cursor.lastrowid, title=title, created_at=created_at)

    def get(self, owner: tuple[str, str], todo_id: int) -> Todo | None:
        with closing(self._connect()) as db:
            row = db.execute(
                "SELECT id, title, created_at FROM todos WHERE id = ? AND issuer = ? AND subject = ?", (todo_id, *owner)
            ).fetchone()
        return Todo(id=row[0], title=row[1], created_at=row[2]) if row else None

    def delete(self, owner: tuple[str, str], todo_id: int) -> bool:
        with closing(self._connect()) as db, db:
            cursor = db.execute("DELETE FROM todos WHERE id = ? AND issuer = ? AND subject = ?", (todo_id, *owner))
        return cursor.rowcount == 1


def register(server: ScopedServer, store: TodoStore) -> None:
    server.describe_scopes(
        {
            "todo:read": "See the todos on your list",
            "todo:write": "Add todos to your list (and see them)",
            "todo:delete": "Delete todos from your list",
        }
    )
    # Adding is the broader right: whoever may add todos may see them (MCP_SCOPE_HIERARCHY can say otherwise).
    server.imply_scopes({"todo:write": ["todo:read"]})
    # Development mode asks for all three in one consent, so a newcomer meets no step-up at first.
    server.advertise_in_development("todo:read todo:write todo:delete")

    @server.tool(scopes=["todo:read"])
    def list_todos() -> TodoList:
        """List your todos, oldest first."""
        return TodoList(todos=store.list(current_principal().key))

    @server.tool(scopes=["todo:write"])
    def add_todo(title: Annotated[str, Field(description=f"What to do (1 to {MAX_TITLE_LENGTH} characters)")]) -> Todo:
        """Add a todo to your list."""
        title = title.strip()
        if not title:
            raise ToolError("title must not be empty")
        if len(title) > MAX_TITLE_LENGTH:
            raise ToolError(f"title must be at most {MAX_TITLE_LENGTH} characters (got {len(title)})")
        return store.add(current_principal().key, title)

    @server.tool(scopes=["todo:delete"])
    def delete_todo(id: Annotated[int, Field(description="The id of the todo, as list_todos shows it")]) -> DeletedTodo:
        """Delete one of your todos by id."""
        if not store.delete(current_principal().key, id):
            raise ToolError(f"no todo with id {id}")
        return DeletedTodo(deleted=id)

    @server.resource(
        "todo://{id}",
        scopes=["todo:read"],
        name="todo",
        title="One of your todos",
        description="A todo of yours by id, as JSON.",
        mime_type="application/json",
    )
    def todo_resource(id: int) -> str:
        todo = store.get(current_principal().key, id)
        if todo is None:
            raise ResourceNotFoundError(f"no todo with id {id}")
        return todo.model_dump_json()

    @server.prompt(scopes=["todo:read"], title="Plan my day")
    def plan_my_day() -> str:
        """Ask the model to order your open todos into a plan for today."""
        todos = store.list(current_principal().key)
        if not todos:
            return "I have no todos today. Suggest one useful thing I could do."
        listing = "\n".join(f"- {todo.title} (todo://{todo.id})" for todo in todos)
        return f"Here are my todos:\n{listing}\n\nOrder them into a realistic plan for today and say why."
