"""Every table of `run.db` and of a cache file, and the ordered migrations that build them.

A run records its schema version in `PRAGMA user_version`. Migration 1 is the layout of
explore-instruct 0.1.0, which left the version at 0 and created tables as it went: each statement is
`IF NOT EXISTS` and the call log's later columns are added when missing, so a 0.1.0 run (whatever it
had created so far), a run from before those columns and a brand-new file all reach the latest
version by the same path. A later change to the layout is a new `Migration` at the end of a list,
never an edit of an earlier one.
"""

from __future__ import annotations

import sqlite3

from explore_instruct.runstore.migrate import Migration, statements

RUN_TABLES = """
CREATE TABLE IF NOT EXISTS nodes (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    parent_id INTEGER REFERENCES nodes(id),
    position INTEGER NOT NULL,
    depth INTEGER NOT NULL,
    name TEXT NOT NULL,
    slug TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    call_id INTEGER,
    pruned INTEGER NOT NULL DEFAULT 0,
    pruned_by INTEGER REFERENCES nodes(id),
    pruned_score REAL
);
CREATE TABLE IF NOT EXISTS examples (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    node_id INTEGER NOT NULL REFERENCES nodes(id),
    origin TEXT NOT NULL,          -- seed | explore | generate | import
    instruction TEXT NOT NULL,
    input TEXT NOT NULL DEFAULT '',
    output TEXT NOT NULL DEFAULT '',
    call_id INTEGER,
    status TEXT NOT NULL DEFAULT 'ok' CHECK (status IN ('ok', 'dropped')),
    drop_stage TEXT,               -- quality | duplicate | filter | semantic | decontaminate | rate
    drop_reason TEXT,
    dup_of INTEGER REFERENCES examples(id),
    score REAL
);
CREATE INDEX IF NOT EXISTS examples_node ON examples(node_id, status);
-- Subtask names exploration rejected: they take no child position, so node keys stay the same.
CREATE TABLE IF NOT EXISTS dropped_tasks (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,      -- parent key, round and place in the reply: a replay inserts nothing
    parent_id INTEGER NOT NULL REFERENCES nodes(id),
    name TEXT NOT NULL,
    reason TEXT NOT NULL,
    call_id INTEGER
);
CREATE TABLE IF NOT EXISTS sample (position INTEGER PRIMARY KEY, example_id INTEGER NOT NULL REFERENCES examples(id));
-- The rate stage's judgement per example key (rebuilt from the call log when the stage runs).
CREATE TABLE IF NOT EXISTS ratings (
    example_key TEXT PRIMARY KEY,
    score INTEGER NOT NULL,
    reason TEXT NOT NULL,
    call_id INTEGER
);
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
CREATE TABLE IF NOT EXISTS review (
    example_id INTEGER PRIMARY KEY REFERENCES examples(id),
    decision TEXT NOT NULL CHECK (decision IN ('accept', 'reject', 'edit')),
    instruction TEXT,              -- the edited text (NULL unless decision = 'edit')
    input TEXT,
    output TEXT,
    reviewer TEXT NOT NULL,
    decided_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS review_history (
    id INTEGER PRIMARY KEY,
    example_id INTEGER NOT NULL REFERENCES examples(id),
    decision TEXT NOT NULL,        -- accept | reject | edit | undo
    instruction TEXT,
    input TEXT,
    output TEXT,
    reviewer TEXT NOT NULL,
    decided_at TEXT NOT NULL
);
-- The dry run's estimate per stage, kept at the run's start for `stats` to compare with the spend.
CREATE TABLE IF NOT EXISTS cost_estimate (
    stage TEXT PRIMARY KEY,
    calls INTEGER NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    cost REAL NOT NULL
)
"""

# The call log and the vector cache: inside run.db, and alone in a cache file (a judge's calls,
# an analysis's embeddings.db).
CACHE_TABLES = """
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
    created_at REAL NOT NULL,
    retry_reasons TEXT,
    error_kind TEXT,
    endpoint TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS llm_calls_ok_key ON llm_calls(key) WHERE status = 'ok';
CREATE INDEX IF NOT EXISTS llm_calls_stage ON llm_calls(stage);
CREATE TABLE IF NOT EXISTS structured_modes (
    endpoint TEXT NOT NULL,        -- redacted base URL
    model TEXT NOT NULL,
    mode TEXT NOT NULL,            -- json_schema | json_object | text
    PRIMARY KEY (endpoint, model)
);
CREATE TABLE IF NOT EXISTS embeddings (
    key TEXT PRIMARY KEY,          -- sha256(model + NUL + text)
    model TEXT NOT NULL,
    dims INTEGER NOT NULL,
    vector BLOB NOT NULL,          -- float32, little-endian, length 1
    tokens INTEGER NOT NULL DEFAULT 0
)
"""

# Call-log columns added after its first layout: a log written before them gains them in migration 1.
CALL_COLUMNS_ADDED = (("retry_reasons", "TEXT"), ("error_kind", "TEXT"), ("endpoint", "TEXT"))


def _call_columns(conn: sqlite3.Connection) -> None:
    have = {row[1] for row in conn.execute("PRAGMA table_info(llm_calls)")}
    for name, sql_type in CALL_COLUMNS_ADDED:
        if name not in have:
            conn.execute(f"ALTER TABLE llm_calls ADD COLUMN {name} {sql_type}")


def _cache_layout(conn: sqlite3.Connection) -> None:
    # Columns first: an old llm_calls table exists, and CREATE TABLE IF NOT EXISTS leaves it as it is.
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'llm_calls'").fetchone():
        _call_columns(conn)
    statements(CACHE_TABLES)(conn)


def _run_layout(conn: sqlite3.Connection) -> None:
    statements(RUN_TABLES)(conn)
    _cache_layout(conn)


# How many stored quality verdicts a session's current rules changed (a rule changed between runs).
VERDICT_CHANGES = """
CREATE TABLE IF NOT EXISTS verdict_changes (
    id INTEGER PRIMARY KEY,
    origin TEXT NOT NULL,          -- explore | generate: the stage that judged again
    changed INTEGER NOT NULL,
    at REAL NOT NULL               -- unix time
)
"""

RUN_MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "the layout of 0.1.0, every table it created as it went, the call log's added columns", _run_layout),
    Migration(
        2, "verdict_changes: stored quality verdicts a later session's rules changed", statements(VERDICT_CHANGES)
    ),
)
CACHE_MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "the call log, structured-output modes and vectors of 0.1.0", _cache_layout),
)
