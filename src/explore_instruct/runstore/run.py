"""The run store: one SQLite file per run (`run.db`) holding the tree, every example, every LLM call.

Keys are deterministic (a node's key is its path of child positions, an example's key names the
call and position it came from), and inserts are idempotent, so replaying a run after a kill
rebuilds exactly the same rows without duplicating any.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from explore_instruct.errors import UserError
from explore_instruct.llm.base import Message
from explore_instruct.runlock import lock_run_dir, unlock_run_dir
from explore_instruct.runstore.calls import CallLog
from explore_instruct.runstore.connection import connect, connect_readonly, open_database, transaction, upgraded_copy
from explore_instruct.runstore.embeddings import VectorCache
from explore_instruct.runstore.migrate import SchemaTooNew, latest_version, refuse_newer, schema_version, upgrade
from explore_instruct.runstore.ratings import load_ratings
from explore_instruct.runstore.schema import RUN_MIGRATIONS
from explore_instruct.tree import DomainTree, Example, TaskNode, slugify

DB_FILE = "run.db"
CONFIG_FILE = "config.yaml"

# The stages that drop examples, in the order a run takes them. A stage judges the examples that
# reached it: kept ones, and those that it or a later stage dropped, so rerunning it (or a resume)
# makes the decisions it made the first time.
DROP_ORDER = ("quality", "duplicate", "filter", "semantic", "decontaminate", "rate")

_SELECT_EXAMPLES = (
    "SELECT id, key, node_id, origin, instruction, input, output, status, drop_stage, drop_reason, dup_of, score,"
    " call_id FROM examples"
)

Which = Literal["sample", "kept", "all", "dropped", "reviewed"]
T = TypeVar("T")


@dataclass(frozen=True)
class NodeRow:
    id: int
    key: str
    parent_id: int | None
    position: int
    depth: int
    name: str
    slug: str
    reason: str
    pruned: bool
    pruned_by: int | None
    pruned_score: float | None


@dataclass(frozen=True)
class ExampleRow:
    id: int
    key: str
    node_id: int
    origin: str
    instruction: str
    input: str
    output: str
    status: str
    drop_stage: str | None
    drop_reason: str | None
    dup_of: int | None
    score: float | None
    call_id: int | None = None  # the logged call it came from (None: a seed or an imported example)


@dataclass(frozen=True)
class NewExample:
    """An example a stage found, before it is stored (stages store them in tree order, then key order)."""

    key: str
    node_id: int
    origin: str
    example: Example
    call_id: int | None = None
    drop_reason: str | None = None


def task_node(row: NodeRow, parent: TaskNode | None) -> TaskNode:
    """A node row as a TaskNode attached to its parent (the builder for `TreeView.build`)."""
    node = TaskNode(name=row.name, reason=row.reason, slug=row.slug, pruned=row.pruned)
    if parent is not None:
        parent.children.append(node)
    return node


class TreeView:
    """The stored tree's shape: node rows in level order, their children, and each node's path.

    Every view of the tree (live nodes for the stages, TaskNodes for exports, provenance paths,
    tree.json) is built from this one reading of the node rows.
    """

    def __init__(self, rows: list[NodeRow]) -> None:
        self.rows = rows
        self.by_id = {row.id: row for row in rows}
        self.children: dict[int | None, list[NodeRow]] = defaultdict(list)
        for row in rows:
            self.children[row.parent_id].append(row)

    @property
    def root(self) -> NodeRow:
        return self.children[None][0]

    def path(self, node_id: int) -> list[str]:
        """Task names from the root down to `node_id`."""
        names: list[str] = []
        row: NodeRow | None = self.by_id[node_id]
        while row is not None:
            names.append(row.name)
            row = self.by_id.get(row.parent_id) if row.parent_id is not None else None
        return names[::-1]

    def build(self, make: Callable[[NodeRow, T | None], T]) -> dict[int, T]:
        """`make(row, built parent)` for every node, parents first; returns node id -> built value."""
        built: dict[int, T] = {}
        for row in self.rows:  # level order: a parent is always built before its children
            built[row.id] = make(row, built[row.parent_id] if row.parent_id is not None else None)
        return built


def _run_db(conn: sqlite3.Connection, run_dir: Path, *, write: bool) -> sqlite3.Connection:
    """`conn` if it holds a run; another program's SQLite file is refused, never given our tables.

    For writing, an empty file (a run killed as it was created) is fine: the schema goes in next.
    A run written by a newer explore-instruct is refused (one line naming both versions).
    """
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "nodes" not in tables and (tables or not write):
            raise UserError(f"{run_dir / DB_FILE}: not a run database (it has no nodes table)")
        refuse_newer(conn, run_dir / DB_FILE, RUN_MIGRATIONS)
    except BaseException:
        conn.close()
        raise
    return conn


def _upgraded(conn: sqlite3.Connection, path: Path) -> sqlite3.Connection:
    """`conn` (writable) brought to the latest schema, after a backup copy when it held an older one."""
    try:
        upgrade(conn, path, RUN_MIGRATIONS)
    except BaseException:
        conn.close()
        raise
    return conn


def _read_run_db(run_dir: Path) -> sqlite3.Connection:
    """run.db for reading, at the latest schema.

    An older run is upgraded in place once, under the run's lock (with the backup `run.db.v<n>.bak`),
    and then read. When it cannot be (a writer holds the lock, or the folder is not writable), it is
    read from an upgraded copy in memory: the file stays as it is.
    """
    path = run_dir / DB_FILE
    conn = _run_db(connect_readonly(path), run_dir, write=False)
    if schema_version(conn) == latest_version(RUN_MIGRATIONS):
        return conn
    try:
        lock = lock_run_dir(run_dir)
    except UserError:
        return upgraded_copy(conn, path, RUN_MIGRATIONS)
    try:
        conn.close()
        try:
            _upgraded(connect(path), path).close()
        except SchemaTooNew:
            raise
        except UserError:  # the folder is writable, run.db is not
            return upgraded_copy(connect_readonly(path), path, RUN_MIGRATIONS)
    finally:
        unlock_run_dir(lock)
    return connect_readonly(path)


def _not_a_file(run_dir: Path) -> Path:
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"run dir {run_dir} is a file, not a folder")
    return run_dir


class RunStore:
    """A run directory: `config.yaml`, `run.db` and the exports written from it.

    Opened for writing (`create`, `open(write=True)`), the process holds the directory's lock until
    the store is closed; opened for reading (the default of `open`), nothing in it is touched, except
    that a run written by an older version is brought to the latest schema once (`_read_run_db`).
    Either way the schema is the latest: every table exists.
    """

    def __init__(
        self, run_dir: Path, conn: sqlite3.Connection, *, readonly: bool = False, lock: Path | None = None
    ) -> None:
        self.run_dir = run_dir
        self.conn = conn
        self._lock = lock
        self.calls = CallLog(conn, readonly=readonly)
        self.vectors = VectorCache(conn, readonly=readonly)  # embeddings, keyed by model and text

    # --- opening ---------------------------------------------------------------------------------

    @classmethod
    def create(cls, run_dir: str | Path, config_yaml: str) -> RunStore:
        """Start a new run directory (it must not hold a run already)."""
        d = _not_a_file(Path(run_dir))
        if (d / DB_FILE).exists():
            raise UserError(
                f"{d}: already holds a run; pass resume to continue it or pick another run_dir",
                settings=("resume", "run_dir"),
            )
        try:
            d.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"run dir {d} cannot be created ({exc.strerror})") from None
        lock = lock_run_dir(d)
        try:
            store = cls(d, open_database(d / DB_FILE, RUN_MIGRATIONS), lock=lock)
        except BaseException:
            unlock_run_dir(lock)
            raise
        (d / CONFIG_FILE).write_text(config_yaml, encoding="utf-8")
        return store

    @classmethod
    def open(cls, run_dir: str | Path, *, write: bool = False) -> RunStore:
        """An existing run: read-only by default; `write=True` takes the directory's lock first."""
        d = _not_a_file(Path(run_dir))
        if not (d / DB_FILE).is_file():
            raise UserError(f"{d}: not a run directory (no {DB_FILE}); start one with 'explore-instruct run'")
        if not write:
            return cls(d, _read_run_db(d), readonly=True)
        lock = lock_run_dir(d)
        try:
            return cls(d, _upgraded(_run_db(connect(d / DB_FILE), d, write=True), d / DB_FILE), lock=lock)
        except BaseException:
            unlock_run_dir(lock)
            raise

    @staticmethod
    def exists(run_dir: str | Path) -> bool:
        return (Path(run_dir) / DB_FILE).is_file()

    def close(self) -> None:
        self.conn.close()
        if self._lock is not None:
            unlock_run_dir(self._lock)
            self._lock = None

    def transaction(self) -> Any:
        return transaction(self.conn)

    # --- nodes -----------------------------------------------------------------------------------

    def add_node(
        self,
        *,
        key: str,
        parent_id: int | None,
        position: int,
        depth: int,
        name: str,
        reason: str = "",
        call_id: int | None = None,
        slug: str | None = None,
    ) -> int:
        """Insert a node once; a replay with the same key returns the existing id."""
        self.conn.execute(
            "INSERT OR IGNORE INTO nodes (key, parent_id, position, depth, name, slug, reason, call_id)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (key, parent_id, position, depth, name, slug or slugify(name), reason, call_id),
        )
        return int(self.conn.execute("SELECT id FROM nodes WHERE key = ?", (key,)).fetchone()[0])

    def add_dropped_task(self, *, key: str, parent_id: int, name: str, reason: str, call_id: int | None) -> None:
        """Record a rejected subtask name once (idempotent by key)."""
        self.conn.execute(
            "INSERT OR IGNORE INTO dropped_tasks (key, parent_id, name, reason, call_id) VALUES (?, ?, ?, ?, ?)",
            (key, parent_id, name, reason, call_id),
        )

    def dropped_tasks(self) -> list[tuple[str, str, str]]:
        """(key, name, reason) of every rejected subtask name, in the order they were found."""
        rows = self.conn.execute("SELECT key, name, reason FROM dropped_tasks ORDER BY id")
        return [(r["key"], r["name"], r["reason"]) for r in rows]

    def dropped_task_counts(self) -> dict[str, int]:
        """Rejected subtask names per reason, most frequent first."""
        rows = self.conn.execute(
            "SELECT reason, COUNT(*) AS n FROM dropped_tasks GROUP BY reason ORDER BY n DESC, reason"
        )
        return {r["reason"]: r["n"] for r in rows}

    def nodes(self) -> list[NodeRow]:
        """All nodes in level order (depth, then the parent's place in that order, then position)."""
        rows = self.conn.execute(
            "SELECT id, key, parent_id, position, depth, name, slug, reason, pruned, pruned_by, pruned_score"
            " FROM nodes ORDER BY depth, position"
        ).fetchall()
        # Ordered by position path, not by row id: ids follow the order replies arrived in, which
        # differs between runs (and between a resumed run and an uninterrupted one) below depth 2.
        paths: dict[int, tuple[int, ...]] = {}
        for r in rows:  # parents come first: rows are sorted by depth
            paths[r["id"]] = (*paths.get(r["parent_id"], ()), r["position"])
        rows.sort(key=lambda r: (r["depth"], paths[r["id"]]))
        return [NodeRow(**{**dict(r), "pruned": bool(r["pruned"])}) for r in rows]

    def set_pruned(self, decisions: Iterable[tuple[int, int | None, float | None]]) -> None:
        """(node id, pruned by node id or None, score) for every node; replaces earlier decisions."""
        self.conn.execute("UPDATE nodes SET pruned = 0, pruned_by = NULL, pruned_score = NULL")
        self.conn.executemany(
            "UPDATE nodes SET pruned = 1, pruned_by = ?, pruned_score = ? WHERE id = ?",
            [(by, score, nid) for nid, by, score in decisions if by is not None],
        )

    # --- examples --------------------------------------------------------------------------------

    def add_example(
        self,
        *,
        key: str,
        node_id: int,
        origin: str,
        example: Example,
        call_id: int | None = None,
        drop_reason: str | None = None,
        drop_stage: str = "quality",
    ) -> None:
        """Insert an example once (idempotent by key); a drop reason stores it as dropped."""
        self.conn.execute(
            "INSERT OR IGNORE INTO examples (key, node_id, origin, instruction, input, output, call_id,"
            " status, drop_stage, drop_reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                key,
                node_id,
                origin,
                example.instruction,
                example.input,
                example.output,
                call_id,
                "dropped" if drop_reason else "ok",
                drop_stage if drop_reason else None,
                drop_reason,
            ),
        )

    def add_examples(self, found: Iterable[NewExample]) -> int:
        """Store examples in the order given (that order numbers new rows), idempotent by key.

        An example stored before keeps its row, but takes the quality verdict (and the text) given now:
        the stage judged it again with the current rules, and the stored verdict must be that same one.
        Returns how many stored rows changed.
        """
        changed: Counter[str] = Counter()
        for new in found:
            inserted = self.conn.total_changes
            self.add_example(
                key=new.key,
                node_id=new.node_id,
                origin=new.origin,
                example=new.example,
                call_id=new.call_id,
                drop_reason=new.drop_reason,
            )
            if self.conn.total_changes == inserted:  # already stored
                changed[new.origin] += self._rejudge(new)
        now = time.time()
        for origin, count in sorted(changed.items()):
            if count:  # kept, so `stats` can say so after the session that made the change
                self.conn.execute(
                    "INSERT INTO verdict_changes (origin, changed, at) VALUES (?, ?, ?)", (origin, count, now)
                )
        return sum(changed.values())

    def verdicts_recomputed(self) -> int:
        """How many stored quality verdicts later sessions changed, over the run's life."""
        return int(self.conn.execute("SELECT COALESCE(SUM(changed), 0) FROM verdict_changes").fetchone()[0])

    def _rejudge(self, new: NewExample) -> int:
        """Give the stored row of `new.key` the verdict and text of `new`; 1 if that changed it.

        Only a quality verdict is replaced: a keep leaves a later stage's drop for that stage to redo.
        """
        row = self.conn.execute(
            "SELECT instruction, input, output, drop_stage, drop_reason FROM examples WHERE key = ?", (new.key,)
        ).fetchone()
        ex = new.example
        same_text = (row["instruction"], row["input"], row["output"]) == (ex.instruction, ex.input, ex.output)
        if same_text:
            if new.drop_reason is None and row["drop_stage"] != "quality":
                return 0  # still kept by quality (a later stage's drop stays for that stage to redo)
            if new.drop_reason is not None and (row["drop_stage"], row["drop_reason"]) == ("quality", new.drop_reason):
                return 0
        self.conn.execute(
            "UPDATE examples SET instruction = ?, input = ?, output = ?, call_id = ?, status = ?, drop_stage = ?,"
            " drop_reason = ?, dup_of = NULL, score = NULL WHERE key = ?",
            (
                ex.instruction,
                ex.input,
                ex.output,
                new.call_id,
                "dropped" if new.drop_reason else "ok",
                "quality" if new.drop_reason else None,
                new.drop_reason,
                new.key,
            ),
        )
        return 1

    def call_messages(self, call_id: int) -> tuple[Message, ...]:
        """The messages of the logged call `call_id` (the prompt a stored example answered)."""
        row = self.conn.execute("SELECT request FROM llm_calls WHERE id = ?", (call_id,)).fetchone()
        messages = json.loads(row["request"])["messages"] if row is not None else []
        return tuple(Message(m["role"], m["content"]) for m in messages)

    def examples(
        self,
        *,
        node_id: int | None = None,
        status: str | None = None,
        origins: Iterable[str] | None = None,
    ) -> list[ExampleRow]:
        """Examples in insertion order, optionally of one node / status / origins."""
        where: list[str] = []
        args: list[object] = []
        if node_id is not None:
            where.append("node_id = ?")
            args.append(node_id)
        if status is not None:
            where.append("status = ?")
            args.append(status)
        if origins is not None:
            origins = list(origins)
            where.append(f"origin IN ({','.join('?' * len(origins))})")
            args.extend(origins)
        sql = _SELECT_EXAMPLES
        if where:
            sql += " WHERE " + " AND ".join(where)
        return [ExampleRow(**dict(r)) for r in self.conn.execute(sql + " ORDER BY id", args)]

    def mark_dropped(self, stage: str, drops: Iterable[tuple[int, str, int | None, float | None]]) -> None:
        """(example id, reason, dup_of, score) dropped by `stage`; earlier drops by that stage are undone."""
        self.conn.execute(
            "UPDATE examples SET status = 'ok', drop_stage = NULL, drop_reason = NULL, dup_of = NULL,"
            " score = NULL WHERE drop_stage = ?",
            (stage,),
        )
        self.conn.executemany(
            "UPDATE examples SET status = 'dropped', drop_stage = ?, drop_reason = ?, dup_of = ?, score = ?"
            " WHERE id = ?",
            [(stage, reason, dup, score, eid) for eid, reason, dup, score in drops],
        )

    def reached(self, stage: str) -> list[ExampleRow]:
        """Generated examples (not seeds) that `stage` judges: kept, or dropped by it or a later stage."""
        later = set(DROP_ORDER[DROP_ORDER.index(stage) :])
        rows = self.examples(status="ok") + self.examples(status="dropped")
        return [r for r in rows if r.origin != "seed" and (r.status == "ok" or r.drop_stage in later)]

    def set_sample(self, example_ids: list[int]) -> None:
        self.conn.execute("DELETE FROM sample")
        self.conn.executemany("INSERT INTO sample (position, example_id) VALUES (?, ?)", list(enumerate(example_ids)))

    def examples_by_id(self, ids: Iterable[int]) -> list[ExampleRow]:
        """The examples with these ids, in row order (ids the run lacks are left out)."""
        wanted = list(ids)
        found: list[ExampleRow] = []
        for start in range(0, len(wanted), 500):  # SQLite's bound-parameter limit
            chunk = wanted[start : start + 500]
            marks = ",".join("?" * len(chunk))
            found += [
                ExampleRow(**dict(r)) for r in self.conn.execute(f"{_SELECT_EXAMPLES} WHERE id IN ({marks})", chunk)
            ]
        return sorted(found, key=lambda r: r.id)

    def sample_ids(self) -> list[int]:
        return [r[0] for r in self.conn.execute("SELECT example_id FROM sample ORDER BY position")]

    def drop_counts(self) -> dict[str, dict[str, int]]:
        """Dropped examples per stage and reason."""
        out: dict[str, dict[str, int]] = {}
        for r in self.conn.execute(
            "SELECT drop_stage, drop_reason, COUNT(*) AS n FROM examples WHERE status = 'dropped'"
            " GROUP BY drop_stage, drop_reason ORDER BY n DESC"
        ):
            out.setdefault(r["drop_stage"], {})[r["drop_reason"]] = r["n"]
        return out

    # --- views used by exports and analysis ------------------------------------------------------

    def tree_view(self) -> TreeView:
        """The stored tree; a run without one yet is a clear error."""
        view = TreeView(self.nodes())
        if not view.children.get(None):
            raise UserError(f"{self.run_dir}: the run has no tree yet (run 'explore' first)")
        return view

    def require_tree(self) -> None:
        self.tree_view()

    def load_tree(self, *, include_seeds: bool = True) -> DomainTree:
        """The tree with each node's kept examples and its pruned flag."""
        view = self.tree_view()
        by_id = view.build(task_node)
        for ex in self.examples(status="ok"):
            if include_seeds or ex.origin != "seed":
                by_id[ex.node_id].examples.append(Example(ex.instruction, ex.input, ex.output))
        return DomainTree(by_id[view.root.id])

    def dataset(self, which: Which = "kept") -> list[dict[str, Any]]:
        """Records with provenance: instruction, input, output, task, task_path, depth, id, origin.

        `sample` is the sampled dataset (falls back to `kept` when no sample was drawn yet),
        `kept` every example that passed all filters (seed examples excluded), `dropped` the
        rest with the reason and, for the diversity filter, the example it collided with.
        `reviewed` the kept examples a reviewer accepted or edited; `sample` and `kept` leave out
        rejected examples and carry edits too.
        """
        view = self.tree_view()
        if which == "sample" and not self.sample_ids():
            which = "kept"
        if which == "sample":
            rows_by_id = {r.id: r for r in self.examples(status="ok")}
            rows = [rows_by_id[i] for i in self.sample_ids() if i in rows_by_id]
        elif which in ("kept", "reviewed"):
            rows = [r for r in self.examples(status="ok") if r.origin != "seed"]
        elif which == "dropped":
            rows = self.examples(status="dropped")
        else:
            rows = self.examples()
        if which != "sample":  # tree order, then key: the same file however the replies arrived
            rank = {row.id: i for i, row in enumerate(view.rows)}
            rows.sort(key=lambda r: (rank[r.node_id], r.key))
        ratings = load_ratings(self.conn)
        out = []
        for r in rows:
            node = view.by_id[r.node_id]
            rec: dict[str, Any] = {
                "instruction": r.instruction,
                "input": r.input,
                "output": r.output,
                "task": node.name,
                "task_path": " > ".join(view.path(node.id)),
                "depth": node.depth,
                "id": r.id,
                "origin": r.origin,
            }
            if r.status == "dropped":
                rec.update(drop_stage=r.drop_stage, drop_reason=r.drop_reason, dup_of=r.dup_of, score=r.score)
            if (rating := ratings.get(r.key)) is not None:  # the rate stage's judgement
                rec["rating"] = rating.as_record()
            out.append(rec)
        if which in ("sample", "kept", "reviewed"):  # a reviewer's rejections and edits (review.py)
            from explore_instruct.review import apply_review  # the review's rules are not the store's

            out = apply_review(self.conn, out, only_reviewed=which == "reviewed")
        return out
