"""The `review` and `review_history` tables: a reviewer's current decision per example, and every decision made.

Also the review app's reads of the run: examples counted per task with their drops, samples and
decisions, and a search over instructions.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass


@dataclass(frozen=True)
class ReviewDecision:
    example_id: int
    decision: str
    instruction: str | None
    input: str | None
    output: str | None
    reviewer: str
    decided_at: str


@dataclass(frozen=True)
class ExampleCount:
    """Generated examples of one task with one status and drop (seeds are not counted)."""

    node_id: int
    status: str
    drop_stage: str | None
    drop_reason: str | None
    n: int


def decisions(conn: sqlite3.Connection) -> dict[int, ReviewDecision]:
    """Current decision per example id (empty for a run nobody has reviewed)."""
    rows = conn.execute("SELECT example_id, decision, instruction, input, output, reviewer, decided_at FROM review")
    return {r["example_id"]: ReviewDecision(**dict(r)) for r in rows}


def record_decision(
    conn: sqlite3.Connection,
    example_id: int,
    decision: str,
    text: tuple[str | None, str | None, str | None],
    reviewer: str,
    at: str,
) -> None:
    """Replace the example's current decision (`undo`: remove it) and append it to the history.

    The caller owns the transaction (and has checked that the example takes a decision).
    """
    if decision == "undo":
        conn.execute("DELETE FROM review WHERE example_id = ?", (example_id,))
    else:
        conn.execute(
            "INSERT INTO review (example_id, decision, instruction, input, output, reviewer, decided_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(example_id) DO UPDATE SET decision = excluded.decision,"
            " instruction = excluded.instruction, input = excluded.input, output = excluded.output,"
            " reviewer = excluded.reviewer, decided_at = excluded.decided_at",
            (example_id, decision, *text, reviewer, at),
        )
    conn.execute(
        "INSERT INTO review_history (example_id, decision, instruction, input, output, reviewer, decided_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (example_id, decision, *text, reviewer, at),
    )


def origin_and_status(conn: sqlite3.Connection, example_id: int) -> tuple[str, str] | None:
    """An example's origin and status, or None when the run has no such example."""
    row = conn.execute("SELECT origin, status FROM examples WHERE id = ?", (example_id,)).fetchone()
    return None if row is None else (row[0], row[1])


def example_counts(conn: sqlite3.Connection) -> list[ExampleCount]:
    """Generated examples per task, status and drop."""
    rows = conn.execute(
        "SELECT node_id, status, drop_stage, drop_reason, COUNT(*) AS n FROM examples"
        " WHERE origin != 'seed' GROUP BY node_id, status, drop_stage, drop_reason"
    )
    return [ExampleCount(**dict(r)) for r in rows]


def sampled_per_task(conn: sqlite3.Connection) -> dict[int, int]:
    """Sampled examples per task (node id)."""
    rows = conn.execute(
        "SELECT e.node_id, COUNT(*) AS n FROM sample s JOIN examples e ON e.id = s.example_id GROUP BY e.node_id"
    )
    return {r[0]: r[1] for r in rows}


def decisions_per_task(conn: sqlite3.Connection) -> dict[int, dict[str, int]]:
    """Current decisions per task (node id) and decision."""
    out: dict[int, dict[str, int]] = {}
    for r in conn.execute(
        "SELECT e.node_id, v.decision, COUNT(*) AS n FROM review v JOIN examples e ON e.id = v.example_id"
        " GROUP BY e.node_id, v.decision"
    ):
        out.setdefault(r[0], {})[r[1]] = r[2]
    return out


def search_instructions(conn: sqlite3.Connection, query: str, limit: int) -> list[int]:
    """Ids of examples whose instruction contains `query` (case-insensitive), at most `limit`, in row order."""
    pattern = "%" + query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    rows = conn.execute(
        "SELECT id FROM examples WHERE instruction LIKE ? ESCAPE '\\' ORDER BY id LIMIT ?", (pattern, limit)
    )
    return [r[0] for r in rows]
