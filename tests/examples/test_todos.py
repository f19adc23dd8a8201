"""The example todo store: rows belong to (issuer, subject)."""

from __future__ import annotations

import multiprocessing
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

from flask_mcp_examples.todos import TodoStore

ALICE = ("https://issuer.example", "alice")
ALICE_ELSEWHERE = ("https://other-issuer.example", "alice")
BOB = ("https://issuer.example", "bob")


def test_each_owner_sees_only_their_own(tmp_path: Path) -> None:
    store = TodoStore(str(tmp_path / "db" / "todos.sqlite3"))
    milk = store.add(ALICE, "milk")
    store.add(BOB, "bread")
    assert [t.title for t in store.list(ALICE)] == ["milk"]
    assert [t.title for t in store.list(BOB)] == ["bread"]
    assert store.list(ALICE_ELSEWHERE) == []
    assert store.delete(BOB, milk.id) is False
    assert store.delete(ALICE_ELSEWHERE, milk.id) is False
    assert store.delete(ALICE, milk.id) is True
    assert store.delete(ALICE, milk.id) is False
    assert store.list(ALICE) == []


def test_storage_survives_a_new_store(tmp_path: Path) -> None:
    path = str(tmp_path / "todos.sqlite3")
    TodoStore(path).add(ALICE, "persist")
    assert [t.title for t in TodoStore(path).list(ALICE)] == ["persist"]


def _open_store(path: str, start: Any, outcomes: Any) -> None:
    start.wait()
    try:
        TodoStore(path)
    except Exception as error:  # reported to the parent, which asserts none happened
        outcomes.put(repr(error))
    else:
        outcomes.put("ok")


def test_workers_booting_together_all_open_one_new_database(tmp_path: Path) -> None:
    """gunicorn forks its workers at once; each creates the store on the same new file (CI once lost a worker so)."""
    workers = 8
    context = multiprocessing.get_context("fork")
    for trial in range(10):
        path = str(tmp_path / f"todos-{trial}.sqlite3")
        start = context.Barrier(workers)
        outcomes = context.Queue()
        processes = [context.Process(target=_open_store, args=(path, start, outcomes)) for _ in range(workers)]
        for process in processes:
            process.start()
        results = [outcomes.get(timeout=30) for _ in processes]
        for process in processes:
            process.join(timeout=30)
        assert results == ["ok"] * workers
        with closing(sqlite3.connect(path)) as db:
            assert db.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'todos'").fetchall() == [
                ("todos",)
            ]
