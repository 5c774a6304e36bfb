"""The batch tables of a run's database: every batch written or submitted, and every line in it.

A batch's row (with its input file, and for the OpenAI Batch API the uploaded file's id and the
batch's id) is committed before anything is sent or polled, so a killed run finds the batches it
submitted and polls them again instead of paying for them twice. A line's `custom_id` is derived
from its request's cache key and attempt number, so it is the same on every resume and unique in
the run; results are matched by it.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections import Counter
from dataclasses import dataclass

from explore_instruct.llm.base import RetryReason

BATCH_SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    id INTEGER PRIMARY KEY,
    provider TEXT NOT NULL,        -- openai | files
    stage TEXT NOT NULL,
    model TEXT NOT NULL,           -- the model id replies are logged under (part of the cache key)
    input_file TEXT NOT NULL,      -- relative to the run directory
    input_file_id TEXT,            -- openai: the uploaded file
    batch_id TEXT,                 -- openai: the batch
    tag TEXT NOT NULL,             -- sent as metadata: finds a batch whose id was never saved
    status TEXT NOT NULL CHECK (status IN ('written', 'uploaded', 'submitted', 'done')),
    outcome TEXT,                  -- once done: completed | expired | cancelled | failed | imported
    requests INTEGER NOT NULL,
    created_at REAL NOT NULL,
    finished_at REAL
);
CREATE TABLE IF NOT EXISTS batch_requests (
    custom_id TEXT PRIMARY KEY,
    batch_row INTEGER NOT NULL REFERENCES batches(id),
    cache_key TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    request TEXT NOT NULL,         -- the request as the call log keeps it (before any reseed)
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'ok', 'failed', 'settled')),
    reason TEXT,                   -- failed: why (a RetryReason)
    error TEXT,
    prompt_tokens INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS batch_requests_key ON batch_requests(cache_key, status);
CREATE INDEX IF NOT EXISTS batch_requests_batch ON batch_requests(batch_row, status);
"""


@dataclass
class BatchRow:
    id: int
    provider: str
    stage: str
    model: str
    input_file: str
    input_file_id: str | None
    batch_id: str | None
    tag: str
    status: str
    requests: int


@dataclass
class Failures:
    """A key's failed attempts since it was last given up on: what the next attempt builds on."""

    count: int = 0
    reseeds: int = 0  # replies that arrived unusable: the next attempt asks with another seed
    reasons: Counter[str] | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    last_error: str | None = None
    last_reason: str | None = None


def custom_id_for(cache_key: str, attempt: int) -> str:
    """Stable across resumes (the cache key) and unique in the run (the attempt)."""
    return f"{cache_key[:40]}-{attempt}"


class BatchStore:
    """The `batches` and `batch_requests` tables over an open connection (callers own transactions)."""

    def __init__(self, conn: sqlite3.Connection, *, readonly: bool = False) -> None:
        self.conn = conn
        if not readonly:
            conn.executescript(BATCH_SCHEMA)

    def add_batch(self, *, provider: str, stage: str, model: str, input_file: str, tag: str, requests: int) -> int:
        cur = self.conn.execute(
            "INSERT INTO batches (provider, stage, model, input_file, tag, status, requests, created_at)"
            " VALUES (?, ?, ?, ?, ?, 'written', ?, ?)",
            (provider, stage, model, input_file, tag, requests, time.time()),
        )
        return int(cur.lastrowid or 0)

    def next_id(self) -> int:
        """The id the next batch row gets (names its input file before the row exists)."""
        return int(self.conn.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM batches").fetchone()[0])

    def add_request(self, *, custom_id: str, batch_row: int, cache_key: str, attempt: int, request: dict) -> None:
        self.conn.execute(
            "INSERT INTO batch_requests (custom_id, batch_row, cache_key, attempt, request) VALUES (?, ?, ?, ?, ?)",
            (custom_id, batch_row, cache_key, attempt, json.dumps(request, ensure_ascii=False)),
        )

    def set_uploaded(self, row: int, input_file_id: str) -> None:
        self.conn.execute(
            "UPDATE batches SET status = 'uploaded', input_file_id = ? WHERE id = ?", (input_file_id, row)
        )

    def set_submitted(self, row: int, batch_id: str) -> None:
        self.conn.execute("UPDATE batches SET status = 'submitted', batch_id = ? WHERE id = ?", (batch_id, row))

    def set_done(self, row: int, outcome: str) -> None:
        self.conn.execute(
            "UPDATE batches SET status = 'done', outcome = ?, finished_at = ? WHERE id = ?", (outcome, time.time(), row)
        )

    def batch(self, row: int) -> BatchRow:
        return self._batches("WHERE id = ?", (row,))[0]

    def _batches(self, where: str, args: tuple) -> list[BatchRow]:
        rows = self.conn.execute(
            "SELECT id, provider, stage, model, input_file, input_file_id, batch_id, tag, status, requests"
            f" FROM batches {where} ORDER BY id",
            args,
        )
        return [BatchRow(**dict(r)) for r in rows]

    def pending_batch_of(self, cache_key: str) -> int | None:
        """The open batch holding a line for `cache_key` that has no result yet, if any."""
        row = self.conn.execute(
            "SELECT batch_row FROM batch_requests WHERE cache_key = ? AND status = 'pending'", (cache_key,)
        ).fetchone()
        return None if row is None else int(row[0])

    def pending_lines(self, batch_row: int) -> list[sqlite3.Row]:
        return self.conn.execute(
            "SELECT custom_id, cache_key, attempt, request FROM batch_requests"
            " WHERE batch_row = ? AND status = 'pending'",
            (batch_row,),
        ).fetchall()

    def line(self, custom_id: str) -> sqlite3.Row | None:
        return self.conn.execute(
            "SELECT r.custom_id, r.batch_row, r.status, b.status AS batch_status, b.provider FROM batch_requests r"
            " JOIN batches b ON b.id = r.batch_row WHERE r.custom_id = ?",
            (custom_id,),
        ).fetchone()

    def attempts_made(self, cache_key: str) -> int:
        return int(
            self.conn.execute("SELECT COUNT(*) FROM batch_requests WHERE cache_key = ?", (cache_key,)).fetchone()[0]
        )

    def failures(self, cache_key: str) -> Failures:
        out = Failures(reasons=Counter())
        for r in self.conn.execute(
            "SELECT reason, error, prompt_tokens, completion_tokens FROM batch_requests"
            " WHERE cache_key = ? AND status = 'failed' ORDER BY attempt",
            (cache_key,),
        ):
            out.count += 1
            out.reasons[r["reason"]] += 1  # type: ignore[index]
            if r["reason"] in (RetryReason.UNPARSEABLE, RetryReason.TRUNCATED):
                out.reseeds += 1
            out.prompt_tokens += r["prompt_tokens"]
            out.completion_tokens += r["completion_tokens"]
            out.last_error, out.last_reason = r["error"], r["reason"]
        return out

    def mark_ok(self, custom_id: str, prompt_tokens: int, completion_tokens: int) -> None:
        self.conn.execute(
            "UPDATE batch_requests SET status = 'ok', prompt_tokens = ?, completion_tokens = ? WHERE custom_id = ?",
            (prompt_tokens, completion_tokens, custom_id),
        )

    def mark_failed(
        self, custom_id: str, reason: str, error: str, prompt_tokens: int = 0, completion_tokens: int = 0
    ) -> None:
        self.conn.execute(
            "UPDATE batch_requests SET status = 'failed', reason = ?, error = ?, prompt_tokens = ?,"
            " completion_tokens = ? WHERE custom_id = ?",
            (reason, error, prompt_tokens, completion_tokens, custom_id),
        )

    def settle(self, cache_key: str) -> None:
        """The key was given up on (logged as a failed call): a later run starts its retries afresh."""
        self.conn.execute(
            "UPDATE batch_requests SET status = 'settled' WHERE cache_key = ? AND status = 'failed'", (cache_key,)
        )

    def submissions(self) -> int:
        """Batches handed to a provider (uploaded files count once they became a batch)."""
        return int(self.conn.execute("SELECT COUNT(*) FROM batches WHERE batch_id IS NOT NULL").fetchone()[0])
