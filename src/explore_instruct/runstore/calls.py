"""The call log: the `llm_calls` and `structured_modes` tables, which double as the request-keyed reply cache.

Every call the client makes is logged here (stage, request, reply, tokens, status). A successful
reply doubles as the cache entry for its request, so a resumed run never pays twice for it. The
same table lives inside a run's `run.db`; commands without a run (e.g. `judge`) use a file of
their own. API keys never reach this table: requests hold prompts and sampling settings only.
A row names the endpoint that answered (or last failed) when the run uses a pool of endpoints
(`endpoint`: a redacted URL). Each row also counts its attempts and why the failed ones failed
(`retry_reasons`, a JSON object of reason -> count), so retries are visible in the summary and `stats`.
Beside the calls it keeps the structured-output mode each endpoint was found to take, so a resumed
process sends what the server accepted rather than probing it again.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from explore_instruct.llm.base import Completion, CompletionRequest, Usage
from explore_instruct.runstore.connection import open_database
from explore_instruct.runstore.schema import CACHE_MIGRATIONS
from explore_instruct.text import repair


class LoggedRequest(Protocol):
    """What the log keeps of a request that is not a chat completion (an embedding batch)."""

    def to_dict(self) -> dict[str, Any]: ...


SELECT_OK_ID = "SELECT id FROM llm_calls WHERE key = ? AND status = 'ok'"


@dataclass
class CachedCall:
    id: int
    completion: Completion


class CallLog:
    """The `llm_calls` table over a connection whose schema is up to date (a run store's, or `open`'s)."""

    def __init__(self, conn: sqlite3.Connection, *, readonly: bool = False) -> None:
        self.conn = conn
        self.readonly = readonly

    @classmethod
    def open(cls, path: str | Path) -> CallLog:
        """A call log in a file of its own (commands without a run), created or upgraded on open."""
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return cls(open_database(path, CACHE_MIGRATIONS))

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
        request: CompletionRequest | LoggedRequest,
        completion: Completion | None,
        attempts: int,
        error: str | None = None,
        seconds: float | None = None,
        retry_reasons: Mapping[str, int] | None = None,
        error_kind: str | None = None,
        endpoint: str | None = None,
    ) -> int:
        """Insert one call row (caller owns the transaction). Returns its id.

        Another process (or another client on the same cache file) may have stored an ok reply for the
        same key meanwhile: the first one stays the cached reply and its id is returned.
        """
        status = "ok" if completion is not None and error is None else "failed"
        cur = self.conn.execute(
            "INSERT OR IGNORE INTO llm_calls (key, stage, model, request, response, finish_reason, prompt_tokens,"
            " completion_tokens, attempts, status, error, seconds, created_at, retry_reasons, error_kind,"
            " endpoint) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
                None if error is None else repair(error),  # may quote a server's body
                seconds,
                time.time(),
                json.dumps(dict(sorted(retry_reasons.items()))) if retry_reasons else None,
                error_kind,
                endpoint,
            ),
        )
        if cur.rowcount == 0:  # an ok row for this key already exists
            return int(self.conn.execute(SELECT_OK_ID, (key,)).fetchone()[0])
        return int(cur.lastrowid or 0)

    def structured_mode(self, endpoint: str, model: str) -> str | None:
        """The structured-output mode `endpoint` was found to take for `model` (None: not probed yet)."""
        row = self.conn.execute(
            "SELECT mode FROM structured_modes WHERE endpoint = ? AND model = ?", (endpoint, model)
        ).fetchone()
        return row["mode"] if row else None

    def remember_structured_mode(self, endpoint: str, model: str, mode: str) -> None:
        """Keep the mode an endpoint accepted (one statement: it commits on its own)."""
        if self.readonly:
            return
        self.conn.execute(
            "INSERT INTO structured_modes (endpoint, model, mode) VALUES (?, ?, ?)"
            " ON CONFLICT (endpoint, model) DO UPDATE SET mode = excluded.mode",
            (endpoint, model, mode),
        )

    def usage_by_endpoint(self) -> dict[str, dict[str, Any]]:
        """Per endpoint of a pool: ok and failed calls and mean seconds per ok call (empty without a pool)."""
        out: dict[str, dict[str, Any]] = {}
        for row in self.conn.execute(
            "SELECT endpoint, status, COUNT(*) AS n, AVG(seconds) AS s FROM llm_calls"
            " WHERE endpoint IS NOT NULL GROUP BY endpoint, status ORDER BY endpoint"
        ):
            e = out.setdefault(row["endpoint"], {"calls": 0, "failed": 0, "mean_seconds": None})
            if row["status"] == "ok":
                e["calls"], e["mean_seconds"] = row["n"], row["s"]
            else:
                e["failed"] = row["n"]
        return out

    def spent(self) -> Usage:
        """Tokens every call in this log has used so far (what a budget counts against)."""
        row = self.conn.execute("SELECT SUM(prompt_tokens), SUM(completion_tokens) FROM llm_calls").fetchone()
        return Usage(int(row[0] or 0), int(row[1] or 0))

    def models(self, *, excluding: tuple[str, ...] = ()) -> list[str]:
        """The models whose replies this log holds (what a resumed run would be mixing with), leaving
        out the calls of the stages in `excluding`."""
        # Embedding requests (stage "embed") name the embedding model: it is not the one writing the data.
        excluding = (*excluding, "embed")
        marks = ",".join("?" * len(excluding))
        rows = self.conn.execute(
            f"SELECT DISTINCT model FROM llm_calls WHERE status = 'ok' AND stage NOT IN ({marks}) ORDER BY 1",
            excluding,
        )
        return [r[0] for r in rows]

    def time_span(self) -> tuple[float, float] | None:
        """When the first and the last call of this log were made (Unix times); None without calls."""
        row = self.conn.execute("SELECT MIN(created_at), MAX(created_at) FROM llm_calls").fetchone()
        return None if row[0] is None else (float(row[0]), float(row[1]))

    def usage_by_stage(self) -> dict[str, dict[str, Any]]:
        """Per stage: ok and failed calls, attempts sent, tokens, and failed attempts by reason."""
        out: dict[str, dict[str, Any]] = {}
        reasons: dict[str, Counter[str]] = {}
        for row in self.conn.execute(
            "SELECT stage, status, COUNT(*) AS n, SUM(attempts) AS a, SUM(prompt_tokens) AS p,"
            " SUM(completion_tokens) AS c FROM llm_calls GROUP BY stage, status"
        ):
            s = out.setdefault(
                row["stage"], {"calls": 0, "failed": 0, "attempts": 0, "prompt_tokens": 0, "completion_tokens": 0}
            )
            s["calls" if row["status"] == "ok" else "failed"] += row["n"]
            s["attempts"] += row["a"] or 0
            s["prompt_tokens"] += row["p"] or 0
            s["completion_tokens"] += row["c"] or 0
            reasons.setdefault(row["stage"], Counter())
        for row in self.conn.execute("SELECT stage, retry_reasons FROM llm_calls WHERE retry_reasons IS NOT NULL"):
            reasons[row["stage"]].update(json.loads(row["retry_reasons"]))
        for stage, counted in reasons.items():
            out[stage]["retry_reasons"] = dict(sorted(counted.items()))
        return out
