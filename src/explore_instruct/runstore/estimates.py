"""The `cost_estimate` table: the dry run's estimate per stage, kept at a run's start for `stats`."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass

from explore_instruct.runstore.connection import transaction


@dataclass(frozen=True)
class EstimateRow:
    stage: str
    calls: int
    prompt_tokens: int
    completion_tokens: int
    cost: float


def save_estimate_rows(conn: sqlite3.Connection, rows: Iterable[EstimateRow]) -> None:
    """Keep each stage's estimate; a stage's first estimate stays."""
    with transaction(conn):
        conn.executemany(
            "INSERT OR IGNORE INTO cost_estimate (stage, calls, prompt_tokens, completion_tokens, cost)"
            " VALUES (?, ?, ?, ?, ?)",
            [(r.stage, r.calls, r.prompt_tokens, r.completion_tokens, r.cost) for r in rows],
        )


def load_estimate_rows(conn: sqlite3.Connection) -> list[EstimateRow]:
    """The stored estimate, one row per stage (empty for a run started before estimates were kept)."""
    rows = conn.execute("SELECT stage, calls, prompt_tokens, completion_tokens, cost FROM cost_estimate")
    return [EstimateRow(r[0], int(r[1]), int(r[2]), int(r[3]), float(r[4])) for r in rows]
