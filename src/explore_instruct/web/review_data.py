"""What the review app shows of a run: the tree with counts per task, a task's examples with their
drop reasons and review decisions, and a search over instructions. Read from the run store only.
"""

from __future__ import annotations

import threading
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from explore_instruct.ratings import Rating, load_ratings
from explore_instruct.review import ReviewDecision, decide, decisions, ensure_schema, reviewable
from explore_instruct.store import ExampleRow, NodeRow, RunStore, TreeView

SEARCH_LIMIT = 200
_EXAMPLE_COLUMNS = ", ".join(f.name for f in fields(ExampleRow))


def _rows_by_id(store: RunStore, ids: list[int]) -> list[ExampleRow]:
    if not ids:
        return []
    marks = ",".join("?" * len(ids))
    sql = f"SELECT {_EXAMPLE_COLUMNS} FROM examples WHERE id IN ({marks}) ORDER BY id"
    return [ExampleRow(**dict(r)) for r in store.conn.execute(sql, ids)]


@dataclass
class TaskCounts:
    written: int = 0
    kept: int = 0
    sampled: int = 0
    dropped: Counter[str] = field(default_factory=Counter)  # "stage: reason" -> count
    review: Counter[str] = field(default_factory=Counter)  # accept | reject | edit -> count


@dataclass(frozen=True)
class ExampleView:
    row: ExampleRow
    decision: ReviewDecision | None
    sampled: bool
    collided_with: str | None  # the kept instruction a diversity-filter drop collided with
    rating: Rating | None = None  # the rate stage's score and reason

    @property
    def reviewable(self) -> bool:
        """Whether the page offers accept / reject / edit on this example."""
        return reviewable(self.row.origin, self.row.status)

    @property
    def shown(self) -> tuple[str, str, str]:
        """The text as it will be exported: the edit when there is one."""
        d = self.decision
        if d is not None and d.decision == "edit":
            return d.instruction or "", d.input or "", d.output or ""
        return self.row.instruction, self.row.input, self.row.output


class RunReview:
    """One open run for the review app; the store's connection is used under a lock."""

    def __init__(self, run_dir: str | Path, reviewer: str) -> None:
        self.store = RunStore.open(run_dir, write=True)
        self.reviewer = reviewer
        self._lock = threading.Lock()
        with self._db():
            self.store.require_tree()
            ensure_schema(self.store.conn)

    def close(self) -> None:
        self.store.close()

    @contextmanager
    def _db(self) -> Iterator[RunStore]:
        with self._lock:
            yield self.store

    def tree(self) -> tuple[TreeView, dict[int, TaskCounts]]:
        with self._db() as store:
            view = store.tree_view()
            conn = store.conn
            counts: dict[int, TaskCounts] = defaultdict(TaskCounts)
            for r in conn.execute(
                "SELECT node_id, status, drop_stage, drop_reason, COUNT(*) AS n FROM examples"
                " WHERE origin != 'seed' GROUP BY node_id, status, drop_stage, drop_reason"
            ):
                c = counts[r["node_id"]]
                c.written += r["n"]
                if r["status"] == "ok":
                    c.kept += r["n"]
                else:
                    c.dropped[f"{r['drop_stage']}: {r['drop_reason']}"] += r["n"]
            for r in conn.execute(
                "SELECT e.node_id, COUNT(*) AS n FROM sample s JOIN examples e ON e.id = s.example_id"
                " GROUP BY e.node_id"
            ):
                counts[r["node_id"]].sampled = r["n"]
            for r in conn.execute(
                "SELECT e.node_id, v.decision, COUNT(*) AS n FROM review v JOIN examples e ON e.id = v.example_id"
                " GROUP BY e.node_id, v.decision"
            ):
                counts[r["node_id"]].review[r["decision"]] = r["n"]
        return view, counts

    def _views(self, store: RunStore, rows: list[ExampleRow]) -> list[ExampleView]:
        current = decisions(store.conn)
        sampled = set(store.sample_ids())
        dup_ids = [r.dup_of for r in rows if r.dup_of is not None]
        collided: dict[int, str] = {}
        if dup_ids:
            marks = ",".join("?" * len(dup_ids))
            for r in store.conn.execute(f"SELECT id, instruction FROM examples WHERE id IN ({marks})", dup_ids):
                collided[r["id"]] = r["instruction"]
        ratings = load_ratings(store.conn)
        return [
            ExampleView(
                r, current.get(r.id), r.id in sampled, collided.get(r.dup_of) if r.dup_of else None, ratings.get(r.key)
            )
            for r in rows
        ]

    def task(self, node_id: int, *, by_score: bool = False) -> tuple[TreeView, NodeRow, list[ExampleView]] | None:
        """A task's examples in row order, or (`by_score`) highest rating first, unrated ones last."""
        with self._db() as store:
            view = store.tree_view()
            node = view.by_id.get(node_id)
            if node is None:
                return None
            examples = self._views(store, store.examples(node_id=node_id))
            if by_score:  # a stable sort: equal scores keep row order
                examples.sort(key=lambda ex: -ex.rating.score if ex.rating else 0)
            return view, node, examples

    def example(self, example_id: int) -> tuple[TreeView, ExampleView] | None:
        with self._db() as store:
            rows = _rows_by_id(store, [example_id])
            if not rows:
                return None
            return store.tree_view(), self._views(store, rows)[0]

    def search(self, query: str) -> tuple[TreeView, list[ExampleView], bool]:
        """Examples whose instruction contains `query` (case-insensitive), at most SEARCH_LIMIT of them."""
        pattern = "%" + query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        with self._db() as store:
            ids = [
                r[0]
                for r in store.conn.execute(
                    "SELECT id FROM examples WHERE instruction LIKE ? ESCAPE '\\' ORDER BY id LIMIT ?",
                    (pattern, SEARCH_LIMIT + 1),
                )
            ]
            rows = _rows_by_id(store, ids[:SEARCH_LIMIT])
            return store.tree_view(), self._views(store, rows), len(ids) > SEARCH_LIMIT

    def decide(self, example_id: int, action: str, edited: tuple[str, str, str] | None = None) -> None:
        with self._db() as store:
            decide(store.conn, example_id, action, self.reviewer, edited=edited)

    def stats(self) -> dict[str, Any]:
        with self._db() as store:
            current = decisions(store.conn)
        return dict(Counter(d.decision for d in current.values()))
