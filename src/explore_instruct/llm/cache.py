"""Request-keyed response cache and call log, kept in SQLite.

Every call the client makes is logged here (stage, request, reply, tokens, status). A successful
reply doubles as the cache entry for its request, so a resumed run never pays twice for it. The
same table lives inside a run's `run.db`; commands without a run (e.g. `judge`) use a file of
their own. API keys never reach this table: requests hold prompts and sampling settings only.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from explore_instruct.db import connect
from explore_instruct.llm.base import Completion, CompletionRequest, Usage

CALLS_SCHEMA = """
CREATE TABLE IF NOT EXISTS llm_calls (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL,
    stage TEXT NOT NULL,
    model TEXT NOT NULL,
    request TEXT NOT NULL,
    response TEXT,
    finish_reason TEXT,
    prompt_tokens INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 1,
    status TEXT NOT NULL CHECK (status IN ('ok', 'failed')),
    error TEXT,
    seconds REAL,
    created_at REAL NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS llm_calls_ok_key ON llm_calls(key) WHERE status = 'ok';
CREATE INDEX IF NOT EXISTS llm_calls_stage ON llm_calls(stage);
"""


@dataclass
class CachedCall:
    id: int
    completion: Completion


class CallLog:
    """The `llm_calls` table over an open connection."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        conn.executescript(CALLS_SCHEMA)

    @classmethod
    def open(cls, path: str | Path) -> CallLog:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return cls(connect(path))

    def lookup(self, key: str) -> CachedCall | None:
        row = self.conn.execute(
            "SELECT id, response, finish_reason, prompt_tokens, completion_tokens FROM llm_calls "
            "WHERE key = ? AND status = 'ok'",
            (key,),
        ).fetchone()
        if row is None:
            return None
        usage = Usage(row["prompt_tokens"], row["completion_tokens"])
        return CachedCall(row["id"], Completion(row["response"], usage, row["finish_reason"]))

    def record(
        self,
        *,
        key: str,
        stage: str,
        model: str,
        request: CompletionRequest,
        completion: Completion | None,
        attempts: int,
        error: str | None = None,
        seconds: float | None = None,
    ) -> int:
        """Insert one call row (caller owns the transaction). Returns its id."""
        status = "ok" if completion is not None and error is None else "failed"
        cur = self.conn.execute(
            "INSERT INTO llm_calls (key, stage, model, request, response, finish_reason, prompt_tokens,"
            " completion_tokens, attempts, status, error, seconds, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                key,
                stage,
                model,
                json.dumps(request.to_dict(), ensure_ascii=False),
                completion.text if completion else None,
                completion.finish_reason if completion else None,
                completion.usage.prompt_tokens if completion else 0,
                completion.usage.completion_tokens if completion else 0,
                attempts,
                status,
                error,
                seconds,
                time.time(),
            ),
        )
        return int(cur.lastrowid or 0)

    def usage_by_stage(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for row in self.conn.execute(
            "SELECT stage, status, COUNT(*) AS n, SUM(prompt_tokens) AS p, SUM(completion_tokens) AS c "
            "FROM llm_calls GROUP BY stage, status"
        ):
            s = out.setdefault(row["stage"], {"calls": 0, "failed": 0, "prompt_tokens": 0, "completion_tokens": 0})
            s["calls" if row["status"] == "ok" else "failed"] += row["n"]
            s["prompt_tokens"] += row["p"] or 0
            s["completion_tokens"] += row["c"] or 0
        return out
