"""The example todo store: rows belong to (issuer, subject)."""

from __future__ import annotations

from pathlib import Path

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
