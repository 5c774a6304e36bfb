"""The `embeddings` table: every vector a run (or an analysis) was sent, keyed by model and text."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from explore_instruct.runstore.connection import in_memory, open_database
from explore_instruct.runstore.schema import CACHE_MIGRATIONS


class VectorCache:
    """The `embeddings` table over a connection whose schema is up to date."""

    def __init__(self, conn: sqlite3.Connection, *, readonly: bool = False) -> None:
        self.conn = conn
        self.readonly = readonly

    @classmethod
    def in_memory(cls) -> VectorCache:
        return cls(in_memory(CACHE_MIGRATIONS))

    @classmethod
    def open(cls, path: str | Path) -> VectorCache:
        """A vector cache in a file of its own (an analysis's `embeddings.db`), created or upgraded on open."""
        return cls(open_database(path, CACHE_MIGRATIONS))

    def lookup(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        for start in range(0, len(keys), 500):  # SQLite's bound-parameter limit
            chunk = list(keys[start : start + 500])
            marks = ",".join("?" * len(chunk))
            for row in self.conn.execute(f"SELECT key, vector FROM embeddings WHERE key IN ({marks})", chunk):
                found[row[0]] = np.frombuffer(row[1], dtype="<f4")
        return found

    def store(self, model_id: str, keys: Sequence[str], vectors: np.ndarray, tokens: Sequence[int]) -> None:
        """Insert vectors (caller owns the transaction); a key stored meanwhile keeps its first vector."""
        if self.readonly:
            return
        self.conn.executemany(
            "INSERT OR IGNORE INTO embeddings (key, model, dims, vector, tokens) VALUES (?, ?, ?, ?, ?)",
            [
                (k, model_id, int(v.shape[0]), np.asarray(v, dtype="<f4").tobytes(), t)
                for k, v, t in zip(keys, vectors, tokens, strict=True)
            ],
        )
