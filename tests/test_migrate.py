"""The one migration rule: ordered steps, one transaction, a backup first, newer versions refused."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from explore_instruct.runstore.connection import connect
from explore_instruct.runstore.migrate import Migration, SchemaTooNew, backup_path, schema_version, statements, upgrade

STEPS = [
    Migration(1, "items", statements("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT)")),
    Migration(2, "items.size", statements("ALTER TABLE items ADD COLUMN size INTEGER NOT NULL DEFAULT 0")),
]


def test_new_database_gets_every_step_and_no_backup(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    conn = connect(path)
    assert upgrade(conn, path, STEPS) == 0
    assert schema_version(conn) == 2
    conn.execute("INSERT INTO items (name, size) VALUES ('a', 3)")
    assert not backup_path(path, 0).exists()


def test_older_database_is_backed_up_then_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    conn = connect(path)
    upgrade(conn, path, STEPS[:1])
    conn.execute("INSERT INTO items (name) VALUES ('kept')")
    assert upgrade(conn, path, STEPS) == 1
    assert [tuple(r) for r in conn.execute("SELECT name, size FROM items")] == [("kept", 0)]
    old = sqlite3.connect(backup_path(path, 1))
    assert old.execute("PRAGMA user_version").fetchone()[0] == 1
    assert old.execute("SELECT name FROM items").fetchall() == [("kept",)]


def test_failed_step_leaves_the_database_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    conn = connect(path)
    upgrade(conn, path, STEPS[:1])
    broken = [
        *STEPS,
        Migration(3, "broken", statements("ALTER TABLE items ADD COLUMN z; SELECT nonsense FROM nowhere")),
    ]
    with pytest.raises(sqlite3.OperationalError):
        upgrade(conn, path, broken)
    assert schema_version(conn) == 1
    assert [r[1] for r in conn.execute("PRAGMA table_info(items)")] == ["id", "name"]


def test_newer_database_is_refused_naming_both_versions(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    conn = connect(path)
    conn.execute("PRAGMA user_version = 9")
    with pytest.raises(SchemaTooNew, match=r"schema version 9.*up to 2"):
        upgrade(conn, path, STEPS)
    assert schema_version(conn) == 9


def test_steps_must_be_numbered_in_order(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        upgrade(connect(tmp_path / "x.db"), tmp_path / "x.db", [STEPS[1], STEPS[0]])
