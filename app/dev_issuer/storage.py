"""SQLite storage of the development authorization server, in the instance folder.

Clients, authorization codes, refresh tokens, the access tokens issued (their
``jti`` and grant family, for revocation), consents and fetched client metadata
documents live in one file shared by every worker process, so a restart keeps
registrations and any worker can redeem what another issued. One short-lived
connection per call, so any thread may use it. The
single-use rules (a code or a refresh token is redeemed once) are enforced by
conditional UPDATEs, which SQLite serialises across processes.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Mapping
from contextlib import closing
from dataclasses import fields
from pathlib import Path
from typing import Any
from typing import TypeVar

from app.dev_issuer.models import AuthorizationCode
from app.dev_issuer.models import Client
from app.dev_issuer.models import RefreshToken

DATABASE_FILE = "dev-issuer.sqlite3"
# Used codes and spent refresh tokens are kept this long past their expiry, to recognise a replay.
KEEP_AFTER_EXPIRY = 24 * 3600

SCHEMA = """
CREATE TABLE IF NOT EXISTS clients (
    client_id TEXT PRIMARY KEY,
    secret_hash TEXT,
    metadata TEXT NOT NULL,
    issued_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS client_metadata_documents (
    url TEXT PRIMARY KEY,
    document TEXT NOT NULL,
    fetched_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS authorization_codes (
    code_hash TEXT PRIMARY KEY,
    client_id TEXT NOT NULL,
    subject TEXT NOT NULL,
    scope TEXT NOT NULL,
    redirect_uri TEXT,
    resource TEXT NOT NULL,
    code_challenge TEXT NOT NULL,
    code_challenge_method TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at INTEGER
);
CREATE TABLE IF NOT EXISTS refresh_tokens (
    token_hash TEXT PRIMARY KEY,
    family TEXT NOT NULL,
    client_id TEXT NOT NULL,
    subject TEXT NOT NULL,
    scope TEXT NOT NULL,
    resource TEXT NOT NULL,
    issued_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at INTEGER,
    revoked_at INTEGER,
    jkt TEXT
);
CREATE INDEX IF NOT EXISTS refresh_tokens_family ON refresh_tokens (family);
CREATE TABLE IF NOT EXISTS consents (
    client_id TEXT NOT NULL,
    subject TEXT NOT NULL,
    granted_at INTEGER NOT NULL,
    PRIMARY KEY (client_id, subject)
);
CREATE TABLE IF NOT EXISTS access_tokens (
    jti TEXT PRIMARY KEY,
    family TEXT,
    client_id TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    revoked_at INTEGER
);
CREATE INDEX IF NOT EXISTS access_tokens_family ON access_tokens (family);
"""
# Columns added since the first release, for instance folders made before them.
MIGRATIONS = {("refresh_tokens", "jkt"): "ALTER TABLE refresh_tokens ADD COLUMN jkt TEXT"}

# The single-use records: each a dataclass whose fields are its table's columns, in order, its key first.
Record = TypeVar("Record", AuthorizationCode, RefreshToken)
TABLES: dict[type[AuthorizationCode | RefreshToken], str] = {
    AuthorizationCode: "authorization_codes",
    RefreshToken: "refresh_tokens",
}


def _columns(model: type[AuthorizationCode | RefreshToken]) -> list[str]:
    return [column.name for column in fields(model)]


# Workers starting together on a new file all switch it to WAL at once; SQLite refuses one of them at once
# ("database is locked", whatever the busy timeout: waiting could deadlock), so the one refused tries again.
INIT_ATTEMPTS = 50
INIT_RETRY_DELAY = 0.1


class Storage:
    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        for attempt in range(1, INIT_ATTEMPTS + 1):
            try:
                self._create()
                return
            except sqlite3.OperationalError as error:
                if "database is locked" not in str(error) or attempt == INIT_ATTEMPTS:
                    raise
                time.sleep(INIT_RETRY_DELAY)

    def _create(self) -> None:
        with closing(self._connect()) as db:
            db.executescript(SCHEMA)
            for (table, column), statement in MIGRATIONS.items():
                if column not in {row[1] for row in db.execute(f"PRAGMA table_info({table})")}:
                    try:
                        db.execute(statement)
                    except sqlite3.OperationalError as error:  # another worker added it just now
                        if "duplicate column" not in str(error):
                            raise

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=10)
        db.execute("PRAGMA journal_mode=WAL")
        return db

    # Clients (RFC 7591)

    def add_client(self, client: Client) -> None:
        with closing(self._connect()) as db, db:
            db.execute(
                "INSERT INTO clients (client_id, secret_hash, metadata, issued_at) VALUES (?, ?, ?, ?)",
                (client.client_id, client.secret_hash, json.dumps(dict(client.metadata)), client.issued_at),
            )

    def client(self, client_id: str) -> Client | None:
        with closing(self._connect()) as db:
            row = db.execute(
                "SELECT client_id, secret_hash, metadata, issued_at FROM clients WHERE client_id = ?", (client_id,)
            ).fetchone()
        if row is None:
            return None
        return Client(client_id=row[0], secret_hash=row[1], metadata=json.loads(row[2]), issued_at=row[3])

    # Client ID metadata documents, as fetched

    def metadata_document(self, url: str) -> tuple[Mapping[str, Any], int] | None:
        with closing(self._connect()) as db:
            row = db.execute(
                "SELECT document, fetched_at FROM client_metadata_documents WHERE url = ?", (url,)
            ).fetchone()
        return (json.loads(row[0]), row[1]) if row is not None else None

    def save_metadata_document(self, url: str, document: Mapping[str, Any], fetched_at: int) -> None:
        with closing(self._connect()) as db, db:
            db.execute(
                "INSERT OR REPLACE INTO client_metadata_documents (url, document, fetched_at) VALUES (?, ?, ?)",
                (url, json.dumps(dict(document)), fetched_at),
            )

    # Authorization codes and refresh tokens: single-use records, one row each, found by its hash

    def add(self, record: AuthorizationCode | RefreshToken, now: int) -> None:
        """Store a new record, first dropping those of its kind expired longer than KEEP_AFTER_EXPIRY ago."""
        table, columns = TABLES[type(record)], _columns(type(record))
        with closing(self._connect()) as db, db:
            db.execute(f"DELETE FROM {table} WHERE expires_at < ?", (now - KEEP_AFTER_EXPIRY,))  # noqa: S608
            db.execute(
                f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",  # noqa: S608
                [getattr(record, column) for column in columns],
            )

    def find(self, model: type[Record], key: str) -> Record | None:
        columns = _columns(model)
        with closing(self._connect()) as db:
            row = db.execute(
                f"SELECT {', '.join(columns)} FROM {TABLES[model]} WHERE {columns[0]} = ?",  # noqa: S608
                (key,),
            ).fetchone()
        return model(*row) if row is not None else None

    def claim(self, record: AuthorizationCode | RefreshToken, now: int) -> bool:
        """Mark the record used; False when it already was (a second redemption, perhaps concurrent) or is revoked."""
        columns = _columns(type(record))
        unrevoked = " AND revoked_at IS NULL" if "revoked_at" in columns else ""
        with closing(self._connect()) as db, db:
            cursor = db.execute(
                f"UPDATE {TABLES[type(record)]} SET used_at = ? WHERE {columns[0]} = ? AND used_at IS NULL{unrevoked}",  # noqa: S608
                (now, getattr(record, columns[0])),
            )
        return cursor.rowcount == 1

    def revoke_family(self, family: str, now: int) -> int:
        """Revoke every refresh token and access token of one family; returns how many refresh tokens were live."""
        with closing(self._connect()) as db, db:
            cursor = db.execute(
                "UPDATE refresh_tokens SET revoked_at = ? WHERE family = ? AND revoked_at IS NULL", (now, family)
            )
            db.execute("UPDATE access_tokens SET revoked_at = ? WHERE family = ? AND revoked_at IS NULL", (now, family))
        return cursor.rowcount

    # Consents: which clients a user ever allowed (an error may be sent back only to such a client)

    def add_consent(self, client_id: str, subject: str, now: int) -> None:
        with closing(self._connect()) as db, db:
            db.execute(
                "INSERT OR REPLACE INTO consents (client_id, subject, granted_at) VALUES (?, ?, ?)",
                (client_id, subject, now),
            )

    def consented(self, client_id: str) -> bool:
        with closing(self._connect()) as db:
            row = db.execute("SELECT 1 FROM consents WHERE client_id = ? LIMIT 1", (client_id,)).fetchone()
        return row is not None

    # Access tokens: what was issued, by grant family, so that a replay or RFC 7009 can revoke them

    def add_access_token(self, jti: str, family: str | None, client_id: str, expires_at: int, now: int) -> None:
        with closing(self._connect()) as db, db:
            db.execute("DELETE FROM access_tokens WHERE expires_at < ?", (now - KEEP_AFTER_EXPIRY,))
            db.execute(
                "INSERT OR IGNORE INTO access_tokens (jti, family, client_id, expires_at) VALUES (?, ?, ?, ?)",
                (jti, family, client_id, expires_at),
            )

    def access_token_family(self, jti: str) -> str | None:
        with closing(self._connect()) as db:
            row = db.execute("SELECT family FROM access_tokens WHERE jti = ?", (jti,)).fetchone()
        return row[0] if row is not None else None

    def revoke_access_token(self, jti: str, client_id: str, expires_at: int, now: int) -> None:
        """Revoke one access token (recorded now if it was never recorded, as a token minted by the CLI)."""
        with closing(self._connect()) as db, db:
            db.execute(
                "INSERT OR IGNORE INTO access_tokens (jti, family, client_id, expires_at) VALUES (?, NULL, ?, ?)",
                (jti, client_id, expires_at),
            )
            db.execute("UPDATE access_tokens SET revoked_at = ? WHERE jti = ? AND revoked_at IS NULL", (now, jti))

    def revoked_access_tokens(self, now: int) -> set[str]:
        """The jti of every revoked access token that has not expired yet."""
        with closing(self._connect()) as db:
            rows = db.execute(
                "SELECT jti FROM access_tokens WHERE revoked_at IS NOT NULL AND expires_at >= ?", (now,)
            ).fetchall()
        return {row[0] for row in rows}
