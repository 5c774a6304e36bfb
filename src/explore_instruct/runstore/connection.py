"""One way to open a SQLite file (for writing, or for reading only) and one transaction, for every database."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from explore_instruct.errors import UserError
from explore_instruct.runstore.migrate import Migration, upgrade


def connect(path: str | Path) -> sqlite3.Connection:
    """Open a SQLite file in WAL mode; writes go through explicit transactions."""
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=30)
    conn.row_factory = sqlite3.Row
    try:
        conn.execute("PRAGMA journal_mode=WAL")
    except sqlite3.OperationalError as exc:  # a read-only file or folder
        conn.close()
        raise UserError(f"{path} is not writable ({exc}): this command must write to the run") from None
    except sqlite3.DatabaseError as exc:  # a file that is not SQLite (damaged, or overwritten by hand)
        conn.close()
        raise UserError(f"{path}: not a SQLite database ({exc})") from None
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


def connect_readonly(path: str | Path) -> sqlite3.Connection:
    """Open a SQLite file for reading only: no table, row or setting in it can change.

    In a folder this process may not write to, SQLite cannot create the WAL index a reader needs;
    the file is then opened as immutable (no other process can be writing to it there either).
    """
    uri = Path(path).resolve().as_uri()
    for mode in ("mode=ro", "immutable=1"):
        conn = sqlite3.connect(f"{uri}?{mode}", uri=True, isolation_level=None, check_same_thread=False, timeout=30)
        conn.row_factory = sqlite3.Row
        try:
            conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
        except sqlite3.OperationalError:
            conn.close()
            continue
        except sqlite3.DatabaseError as exc:  # a file that is not SQLite (damaged, or overwritten by hand)
            conn.close()
            raise UserError(f"{path}: not a SQLite database ({exc})") from None
        return conn
    raise UserError(f"{path}: cannot be opened for reading")


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One atomic unit of work: everything inside commits together or not at all."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def open_database(path: str | Path, migrations: Sequence[Migration]) -> sqlite3.Connection:
    """A database opened for writing and brought to the latest version of `migrations` (newer: refused)."""
    conn = connect(path)
    try:
        upgrade(conn, Path(path), migrations)
    except BaseException:
        conn.close()
        raise
    return conn


def in_memory(migrations: Sequence[Migration]) -> sqlite3.Connection:
    """An empty database in memory with the tables of `migrations` (a cache that nothing keeps)."""
    conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    upgrade(conn, Path(":memory:"), migrations, backup=False)
    return conn


def upgraded_copy(conn: sqlite3.Connection, path: Path, migrations: Sequence[Migration]) -> sqlite3.Connection:
    """`conn`'s database copied into memory and brought to the latest version there; `conn` is closed.

    How a reader sees an older file it may not write: the queries hold, and the file stays as it is.
    """
    copy = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
    copy.row_factory = sqlite3.Row
    try:
        conn.backup(copy)
    finally:
        conn.close()
    try:
        upgrade(copy, path, migrations, backup=False)
    except BaseException:
        copy.close()
        raise
    return copy
