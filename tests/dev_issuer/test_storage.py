"""The development authorization server's SQLite file, as several workers open it at once."""

from __future__ import annotations

import multiprocessing
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from app.dev_issuer import storage
from app.dev_issuer.storage import Storage


def _open(path: str, barrier: Any) -> None:
    barrier.wait()
    Storage(path)


def test_workers_creating_the_file_together_all_start(tmp_path: Path) -> None:
    """gunicorn boots its workers at the same moment; each creates the schema on the same new file."""
    context = multiprocessing.get_context("fork")
    for round_ in range(10):
        path = str(tmp_path / f"round-{round_}" / "dev-issuer.sqlite3")
        barrier = context.Barrier(4)
        workers = [context.Process(target=_open, args=(path, barrier)) for _ in range(4)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(30)
        assert [worker.exitcode for worker in workers] == [0, 0, 0, 0]
        with sqlite3.connect(path) as db:
            assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_a_locked_start_is_tried_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The refusal SQLite gives the loser of that race, made to happen every time: twice, then it succeeds."""
    real = Storage._connect
    refusals = []

    def connect(self: Storage) -> sqlite3.Connection:
        if len(refusals) < 2:
            refusals.append(1)
            raise sqlite3.OperationalError("database is locked")
        return real(self)

    monkeypatch.setattr(Storage, "_connect", connect)
    monkeypatch.setattr(storage, "INIT_RETRY_DELAY", 0.01)
    opened = Storage(tmp_path / "dev-issuer.sqlite3")
    assert len(refusals) == 2
    assert opened.client("nobody") is None  # the schema is there


def test_other_errors_are_not_retried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def connect(self: Storage) -> sqlite3.Connection:
        calls.append(1)
        raise sqlite3.OperationalError("unable to open database file")

    monkeypatch.setattr(Storage, "_connect", connect)
    with pytest.raises(sqlite3.OperationalError, match="unable to open database file"):
        Storage(tmp_path / "dev-issuer.sqlite3")
    assert calls == [1]
