"""Schema versions and ordered migrations, one rule for every database the project writes.

A database records the version of its schema in `PRAGMA user_version`. Opening it applies the
migrations it lacks, in order, in one transaction, after a backup copy of the file; a database written
by a newer version is refused with one line naming both versions, so an older program never writes
into a layout it does not know.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from explore_instruct.errors import UserError


@dataclass(frozen=True)
class Migration:
    """One step: `apply` brings a database at `version - 1` to `version`.

    `apply` runs inside the upgrade's transaction: it must use `execute`, never `executescript`
    (which commits first). `statements` turns a block of DDL into such a step.
    """

    version: int
    summary: str
    apply: Callable[[sqlite3.Connection], None]


class SchemaTooNew(UserError):
    """The database was written by a newer explore-instruct than this one."""


def statements(ddl: str) -> Callable[[sqlite3.Connection], None]:
    """A migration step that runs each `;`-separated statement of `ddl` (no `;` inside a statement)."""

    def apply(conn: sqlite3.Connection) -> None:
        for statement in ddl.split(";"):
            if statement.strip():
                conn.execute(statement)

    return apply


def schema_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def latest_version(migrations: Sequence[Migration]) -> int:
    return migrations[-1].version if migrations else 0


def check_order(migrations: Sequence[Migration]) -> None:
    """Migrations are numbered 1, 2, 3... with no gap: a programming error otherwise, caught by the tests."""
    versions = [m.version for m in migrations]
    if versions != list(range(1, len(versions) + 1)):
        raise ValueError(f"migrations must be numbered 1..n in order, got {versions}")


def refuse_newer(conn: sqlite3.Connection, path: Path, migrations: Sequence[Migration]) -> int:
    """The database's version; one line naming both versions when it is newer than this program reads."""
    found, known = schema_version(conn), latest_version(migrations)
    if found > known:
        from explore_instruct import __version__

        raise SchemaTooNew(
            f"{path} has schema version {found}, written by a newer explore-instruct; this is "
            f"explore-instruct {__version__}, which reads schema versions up to {known}: upgrade explore-instruct"
        )
    return found


def _holds_data(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' LIMIT 1").fetchone() is not None


def backup_path(path: Path, version: int) -> Path:
    return path.with_name(f"{path.name}.v{version}.bak")


def upgrade(conn: sqlite3.Connection, path: Path, migrations: Sequence[Migration], *, backup: bool = True) -> int:
    """Apply the migrations `conn` lacks; returns the version it had. `conn` must be writable (autocommit mode).

    A database that already holds tables is first copied to `<name>.v<old>.bak` beside it (SQLite's
    online backup, so the copy is consistent even in WAL mode); a new, empty one is not, and neither
    is a copy nothing keeps (`backup=False`: a database in memory).
    """
    check_order(migrations)
    found = refuse_newer(conn, path, migrations)
    pending = [m for m in migrations if m.version > found]
    if not pending:
        return found
    if backup and _holds_data(conn):
        target = backup_path(path, found)
        copy = sqlite3.connect(str(target))
        try:
            conn.backup(copy)
        finally:
            copy.close()
    conn.execute("BEGIN IMMEDIATE")
    try:
        # Another process may have upgraded between our read and the lock: read again under it.
        now = refuse_newer(conn, path, migrations)
        for step in (m for m in migrations if m.version > now):
            step.apply(conn)
        conn.execute(f"PRAGMA user_version = {latest_version(migrations)}")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return found
