"""What the review app shows of a run: the tree with counts per task, a task's examples with their
drop reasons and review decisions, and a search over instructions. Read from the run store only.
"""

from __future__ import annotations

import threading
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from explore_instruct.ratings import Rating
from explore_instruct.review import decide, reviewable
from explore_instruct.runstore import ExampleRow, NodeRow, ReviewDecision, RunStore, TreeView, decisions, load_ratings
from explore_instruct.runstore import review as review_table

SEARCH_LIMIT = 200


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

    def close(self) -> None:
        self.store.close()

    @contextmanager
    def _db(self) -> Iterator[RunStore]:
        with self._lock:
            yield self.store

    def tree(self) -> tuple[TreeView, dict[int, TaskCounts]]:
        with self._db() as store:
            view = store.tree_view()
            counts: dict[int, TaskCounts] = defaultdict(TaskCounts)
            for r in review_table.example_counts(store.conn):
                c = counts[r.node_id]
                c.written += r.n
                if r.status == "ok":
                    c.kept += r.n
                else:
                    c.dropped[f"{r.drop_stage}: {r.drop_reason}"] += r.n
            for node_id, n in review_table.sampled_per_task(store.conn).items():
                counts[node_id].sampled = n
            for node_id, per_decision in review_table.decisions_per_task(store.conn).items():
                counts[node_id].review.update(per_decision)
        return view, counts

    def _views(self, store: RunStore, rows: list[ExampleRow]) -> list[ExampleView]:
        current = decisions(store.conn)
        sampled = set(store.sample_ids())
        dup_ids = [r.dup_of for r in rows if r.dup_of is not None]
        collided = {r.id: r.instruction for r in store.examples_by_id(dup_ids)}
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
            rows = store.examples_by_id([example_id])
            if not rows:
                return None
            return store.tree_view(), self._views(store, rows)[0]

    def search(self, query: str) -> tuple[TreeView, list[ExampleView], bool]:
        """Examples whose instruction contains `query` (case-insensitive), at most SEARCH_LIMIT of them."""
        with self._db() as store:
            ids = review_table.search_instructions(store.conn, query, SEARCH_LIMIT + 1)
            rows = store.examples_by_id(ids[:SEARCH_LIMIT])
            return store.tree_view(), self._views(store, rows), len(ids) > SEARCH_LIMIT

    def decide(self, example_id: int, action: str, edited: tuple[str, str, str] | None = None) -> None:
        with self._db() as store:
            decide(store.conn, example_id, action, self.reviewer, edited=edited)

    def stats(self) -> dict[str, Any]:
        with self._db() as store:
            current = decisions(store.conn)
        return dict(Counter(d.decision for d in current.values()))
