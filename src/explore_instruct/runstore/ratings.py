"""The `ratings` table: the rate stage's score and reason per example key.

Keyed by the example's key, so a rating survives the renumbering of rows and a replay writes the same
row again. The table is derived from the call log (the rate stage rebuilds it from cached replies),
which is why the stage may clear it before it rates.
"""

from __future__ import annotations

import sqlite3

from explore_instruct.ratings import Rating


def save_rating(conn: sqlite3.Connection, example_key: str, rating: Rating, call_id: int | None) -> None:
    """Store (or replace) one example's rating; the caller owns the transaction."""
    conn.execute(
        "INSERT INTO ratings (example_key, score, reason, call_id) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (example_key) DO UPDATE SET score = excluded.score, reason = excluded.reason,"
        " call_id = excluded.call_id",
        (example_key, rating.score, rating.reason, call_id),
    )


def clear_ratings(conn: sqlite3.Connection) -> None:
    conn.execute("DELETE FROM ratings")


def load_ratings(conn: sqlite3.Connection) -> dict[str, Rating]:
    """Every stored rating by example key (empty for a run that has none)."""
    rows = conn.execute("SELECT example_key, score, reason FROM ratings")
    return {r[0]: Rating(int(r[1]), r[2]) for r in rows}
