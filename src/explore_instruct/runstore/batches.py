"""The `batches` and `batch_requests` tables of run.db: every batch written or submitted, and every line in it.

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
from typing import Any

from explore_instruct.llm.base import RetryReason


@dataclass(frozen=True)
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


@dataclass(frozen=True)
class BatchSummary:
    """A batch as `batch status` lists it."""

    id: int
    provider: str
    input_file: str
    batch_id: str | None
    status: str
    outcome: str | None
    requests: int
    ok: int


@dataclass(frozen=True)
class PendingLine:
    """A line of a batch that has no result yet."""

    custom_id: str
    cache_key: str
    attempt: int
    request: str  # JSON, as the call log keeps it


@dataclass(frozen=True)
class LineState:
    """Where a line stands, and its batch."""

    custom_id: str
    batch_row: int
    status: str
    batch_status: str
    provider: str


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

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

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

    def add_request(
        self, *, custom_id: str, batch_row: int, cache_key: str, attempt: int, request: dict[str, Any]
    ) -> None:
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

    def _batches(self, where: str, args: tuple[object, ...]) -> list[BatchRow]:
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

    def pending_lines(self, batch_row: int) -> list[PendingLine]:
        rows = self.conn.execute(
            "SELECT custom_id, cache_key, attempt, request FROM batch_requests"
            " WHERE batch_row = ? AND status = 'pending'",
            (batch_row,),
        )
        return [PendingLine(**dict(r)) for r in rows]

    def line(self, custom_id: str) -> LineState | None:
        row = self.conn.execute(
            "SELECT r.custom_id, r.batch_row, r.status, b.status AS batch_status, b.provider FROM batch_requests r"
            " JOIN batches b ON b.id = r.batch_row WHERE r.custom_id = ?",
            (custom_id,),
        ).fetchone()
        return None if row is None else LineState(**dict(row))

    def overview(self) -> list[BatchSummary]:
        """Every batch with its counts of lines and of replies received (`batch status`)."""
        rows = self.conn.execute(
            "SELECT b.id, b.provider, b.input_file, b.batch_id, b.status, b.outcome, b.requests,"
            " COALESCE(SUM(r.status = 'ok'), 0) AS ok FROM batches b LEFT JOIN batch_requests r ON r.batch_row = b.id"
            " GROUP BY b.id ORDER BY b.id"
        )
        return [BatchSummary(**dict(r)) for r in rows]

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
