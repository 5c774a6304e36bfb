"""The human-evaluation database (`study.db`): the study's settings, items, raters, their lists and votes.

`web/study.py` decides what a study holds and who may vote; this module is the only one that reads or
writes the file. Every vote is committed with synchronous=FULL before the call returns.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from explore_instruct.runstore.connection import open_database, transaction
from explore_instruct.runstore.migrate import Migration, statements

# Version 1 is the layout 0.1.0 wrote (with user_version 0), statement for statement: every table is
# created only if missing, so such a file reaches version 1 unchanged and matches a new one.
V1 = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY,
    question_id TEXT NOT NULL UNIQUE,
    cls TEXT NOT NULL DEFAULT '',
    question TEXT NOT NULL,
    baseline TEXT NOT NULL,
    candidate TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS raters (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    token_sha256 TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS assignments (
    rater_id INTEGER NOT NULL REFERENCES raters(id),
    position INTEGER NOT NULL,             -- 1-based place in the rater's list
    item_id INTEGER NOT NULL REFERENCES items(id),
    candidate_side TEXT NOT NULL CHECK (candidate_side IN ('left', 'right')),
    PRIMARY KEY (rater_id, position),
    UNIQUE (rater_id, item_id)
);
CREATE TABLE IF NOT EXISTS votes (
    rater_id INTEGER NOT NULL REFERENCES raters(id),
    item_id INTEGER NOT NULL REFERENCES items(id),
    choice TEXT NOT NULL CHECK (choice IN ('left', 'right', 'tie', 'both_bad')),
    comment TEXT NOT NULL DEFAULT '',
    voted_at TEXT NOT NULL,
    PRIMARY KEY (rater_id, item_id)
)
"""

MIGRATIONS = (Migration(1, "meta, items, raters, assignments and votes", statements(V1)),)


@dataclass(frozen=True)
class ItemRow:
    """A question with the baseline's and the candidate's answers."""

    id: int
    question_id: str
    cls: str
    question: str
    baseline: str
    candidate: str


@dataclass(frozen=True)
class RaterRow:
    id: int
    name: str
    token_sha256: str  # the digest of the rater's link token; the token itself is never stored


@dataclass(frozen=True)
class Placement:
    """One item in a rater's list, with the side the candidate's answer is shown on."""

    rater_id: int
    position: int  # 1-based
    item_id: int
    candidate_side: str  # left | right


@dataclass(frozen=True)
class AssignedItem:
    """A rater's item at `position`: the item, the candidate's side and the rater's vote if any."""

    position: int
    item_id: int
    candidate_side: str
    question_id: str
    cls: str
    question: str
    baseline: str
    candidate: str
    choice: str | None
    comment: str


@dataclass(frozen=True)
class RaterProgress:
    name: str
    assigned: int
    voted: int
    last_vote: str | None


@dataclass(frozen=True)
class VoteRow:
    """A vote as the rater gave it, with the side the candidate was shown on to that rater."""

    rater: str
    item_id: int
    question_id: str
    cls: str
    choice: str
    candidate_side: str
    comment: str


def write_study_db(
    path: Path,
    meta: Mapping[str, str],
    items: Sequence[ItemRow],
    raters: Sequence[RaterRow],
    placements: Sequence[Placement],
) -> None:
    """Create a new study database holding everything at once (one transaction)."""
    conn = open_database(path, MIGRATIONS)
    try:
        with transaction(conn):
            conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", list(meta.items()))
            conn.executemany(
                "INSERT INTO items (id, question_id, cls, question, baseline, candidate) VALUES (?, ?, ?, ?, ?, ?)",
                [(i.id, i.question_id, i.cls, i.question, i.baseline, i.candidate) for i in items],
            )
            conn.executemany(
                "INSERT INTO raters (id, name, token_sha256) VALUES (?, ?, ?)",
                [(r.id, r.name, r.token_sha256) for r in raters],
            )
            conn.executemany(
                "INSERT INTO assignments (rater_id, position, item_id, candidate_side) VALUES (?, ?, ?, ?)",
                [(p.rater_id, p.position, p.item_id, p.candidate_side) for p in placements],
            )
    finally:
        conn.close()


class StudyDB:
    """An open study database; every method is safe to call from several threads at once."""

    def __init__(self, path: Path) -> None:
        self.conn = open_database(path, MIGRATIONS)
        self.conn.execute("PRAGMA synchronous=FULL")  # an acknowledged vote survives a crash
        self._lock = threading.Lock()

    def close(self) -> None:
        self.conn.close()

    def _rows(self, sql: str, args: tuple[object, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self.conn.execute(sql, args).fetchall()

    def meta(self) -> dict[str, str]:
        return {r["key"]: r["value"] for r in self._rows("SELECT key, value FROM meta")}

    def raters(self) -> list[RaterRow]:
        return [RaterRow(*r) for r in self._rows("SELECT id, name, token_sha256 FROM raters ORDER BY id")]

    def item_count(self) -> int:
        return int(self._rows("SELECT COUNT(*) FROM items")[0][0])

    def assignments(self, rater_id: int) -> list[AssignedItem]:
        """The rater's items in list order, each with the rater's vote if any."""
        rows = self._rows(
            "SELECT a.position, a.item_id, a.candidate_side, i.question_id, i.cls, i.question, i.baseline,"
            " i.candidate, v.choice, v.comment FROM assignments a JOIN items i ON i.id = a.item_id"
            " LEFT JOIN votes v ON v.rater_id = a.rater_id AND v.item_id = a.item_id"
            " WHERE a.rater_id = ? ORDER BY a.position",
            (rater_id,),
        )
        return [
            AssignedItem(
                r["position"], r["item_id"], r["candidate_side"], r["question_id"], r["cls"], r["question"],
                r["baseline"], r["candidate"], r["choice"], r["comment"] or "",
            )
            for r in rows
        ]  # fmt: skip

    def vote(self, rater_id: int, position: int, choice: str, comment: str, voted_at: str) -> bool:
        """Store (or replace) the rater's vote on their `position`-th item; False if no such item."""
        with self._lock, transaction(self.conn):
            row = self.conn.execute(
                "SELECT item_id FROM assignments WHERE rater_id = ? AND position = ?", (rater_id, position)
            ).fetchone()
            if row is None:
                return False
            self.conn.execute(
                "INSERT INTO votes (rater_id, item_id, choice, comment, voted_at) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT(rater_id, item_id) DO UPDATE SET choice = excluded.choice,"
                " comment = excluded.comment, voted_at = excluded.voted_at",
                (rater_id, row["item_id"], choice, comment, voted_at),
            )
        return True

    def progress(self) -> list[RaterProgress]:
        """Per rater: items assigned, items voted, time of the last vote."""
        rows = self._rows(
            "SELECT r.name, (SELECT COUNT(*) FROM assignments a WHERE a.rater_id = r.id) AS assigned,"
            " COUNT(v.item_id) AS voted, MAX(v.voted_at) AS last_vote FROM raters r"
            " LEFT JOIN votes v ON v.rater_id = r.id GROUP BY r.id ORDER BY r.id"
        )
        return [RaterProgress(*r) for r in rows]

    def votes(self) -> list[VoteRow]:
        """Every vote, by rater and then item."""
        rows = self._rows(
            "SELECT r.name, v.item_id, i.question_id, i.cls, v.choice, a.candidate_side, v.comment FROM votes v"
            " JOIN raters r ON r.id = v.rater_id JOIN items i ON i.id = v.item_id"
            " JOIN assignments a ON a.rater_id = v.rater_id AND a.item_id = v.item_id ORDER BY r.id, v.item_id"
        )
        return [VoteRow(*r) for r in rows]
