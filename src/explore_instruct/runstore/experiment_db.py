"""The experiment database: the study folder's finished artefacts, each step's latest status, an event log.

`experiment/runner.py` decides what runs; this module is the only one that reads or writes the file.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from explore_instruct.runstore.connection import connect_readonly, open_database, transaction, upgraded_copy
from explore_instruct.runstore.migrate import Migration, latest_version, refuse_newer, statements

# Version 1 is the layout 0.1.0 wrote (with user_version 0), statement for statement: every table is
# created only if missing, so such a file reaches version 1 unchanged and matches a new one.
V1 = """
CREATE TABLE IF NOT EXISTS artefacts (
    key TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    path TEXT NOT NULL,
    digest TEXT NOT NULL,
    info TEXT NOT NULL,
    weights_deleted INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS steps (
    step_id TEXT PRIMARY KEY,
    key TEXT,
    status TEXT NOT NULL,
    reason TEXT,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    step_id TEXT NOT NULL,
    key TEXT,
    event TEXT NOT NULL,
    reason TEXT,
    at REAL NOT NULL
)
"""

MIGRATIONS = (Migration(1, "artefacts, steps and events", statements(V1)),)


@dataclass(frozen=True)
class ArtefactRow:
    """A finished step's folder, recorded by its content key."""

    key: str
    kind: str
    path: str
    digest: str
    info: dict[str, Any]
    weights_deleted: bool
    created_at: float


@dataclass(frozen=True)
class StepRow:
    """A step's latest status."""

    step_id: str
    key: str | None
    status: str
    reason: str | None
    updated_at: float


@dataclass(frozen=True)
class EventRow:
    """One entry of the event log (a step ran, was reused, or failed)."""

    id: int
    step_id: str
    key: str | None
    event: str
    reason: str | None
    at: float


def _artefact(row: sqlite3.Row) -> ArtefactRow:
    return ArtefactRow(
        row["key"], row["kind"], row["path"], row["digest"], json.loads(row["info"]),
        bool(row["weights_deleted"]), row["created_at"],
    )  # fmt: skip


def _read_latest(path: Path) -> sqlite3.Connection:
    """The file opened read-only; an older (or empty) one is copied into memory and brought to the latest
    layout there, so the queries below hold for it and the file itself is left as it is."""
    conn = connect_readonly(path)
    try:
        found = refuse_newer(conn, path, MIGRATIONS)
    except BaseException:
        conn.close()
        raise
    if found == latest_version(MIGRATIONS):
        return conn
    return upgraded_copy(conn, path, MIGRATIONS)


class ExperimentDB:
    """The open database; every method is safe to call from several threads at once.

    `readonly` (a dry run or a results pass) never writes the file: an older (or empty) one is read
    through an upgraded copy in memory, a newer one is refused all the same.
    """

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        if readonly:
            self.conn = _read_latest(path)
        else:
            self.conn = open_database(path, MIGRATIONS)
        self.lock = threading.Lock()

    def close(self) -> None:
        self.conn.close()

    def _rows(self, sql: str, args: tuple[object, ...] = ()) -> list[sqlite3.Row]:
        with self.lock:
            return self.conn.execute(sql, args).fetchall()

    def artefact(self, key: str) -> ArtefactRow | None:
        rows = self._rows("SELECT * FROM artefacts WHERE key = ?", (key,))
        return _artefact(rows[0]) if rows else None

    def add_artefact(self, key: str, kind: str, path: Path, digest: str, info: dict[str, Any]) -> None:
        with self.lock, transaction(self.conn):
            self.conn.execute(
                "INSERT OR REPLACE INTO artefacts (key, kind, path, digest, info, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (key, kind, str(path), digest, json.dumps(info), time.time()),
            )

    def forget_artefact(self, key: str) -> None:
        with self.lock, transaction(self.conn):
            self.conn.execute("DELETE FROM artefacts WHERE key = ?", (key,))

    def mark_weights_deleted(self, key: str) -> None:
        with self.lock, transaction(self.conn):
            self.conn.execute("UPDATE artefacts SET weights_deleted = 1 WHERE key = ?", (key,))

    def set_step(self, step_id: str, key: str | None, status: str, reason: str | None, event: str | None) -> None:
        """Record the step's status and, when `event` is given, log it in the same transaction."""
        now = time.time()
        with self.lock, transaction(self.conn):
            self.conn.execute(
                "INSERT OR REPLACE INTO steps (step_id, key, status, reason, updated_at) VALUES (?, ?, ?, ?, ?)",
                (step_id, key, status, reason, now),
            )
            if event:
                self.conn.execute(
                    "INSERT INTO events (step_id, key, event, reason, at) VALUES (?, ?, ?, ?, ?)",
                    (step_id, key, event, reason, now),
                )

    def step_rows(self) -> dict[str, StepRow]:
        rows = self._rows("SELECT step_id, key, status, reason, updated_at FROM steps")
        return {r["step_id"]: StepRow(*r) for r in rows}

    def events(self, event: str | None = None) -> list[EventRow]:
        """The event log in order, or only the entries of one kind."""
        sql = "SELECT id, step_id, key, event, reason, at FROM events" + (" WHERE event = ?" if event else "")
        return [EventRow(*r) for r in self._rows(sql + " ORDER BY id", (event,) if event else ())]
