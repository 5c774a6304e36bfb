"""Running a plan: content-addressed artefacts, recorded in SQLite, resumable after any kill.

A step writes into `artefacts/<kind>/.<key>.partial`, puts a `step.json` (its key and numbers) inside,
and renames the folder to `artefacts/<kind>/<key>`: the rename is the commit point. The step is then
recorded in the experiment's database (`explore_instruct.db`). A process killed at any moment
(SIGKILL included) loses at most the steps in flight: on resume a finished folder is adopted even
if the database never heard of it, and a `.partial` folder is removed and its step run again.
The generation steps are resumable run directories themselves (`run.db` caches every LLM call).

Scheduling: steps whose inputs are ready run in a thread pool; each holds named resources while it
runs: `llm` (up to `runner.llm_workers` at once), `device` (training, local answering and analysis,
one at a time) and `run:<dataset>` (the steps that rewrite one generated pool's filter and sample).
"""

from __future__ import annotations

import fcntl
import json
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from explore_instruct.datafile import atomic_write_text
from explore_instruct.errors import UserError
from explore_instruct.experiment.plan import DEVICE, LLM, Plan, Step, file_digest, select_cells, step_key, steps_for
from explore_instruct.experiment.spec import spec_yaml
from explore_instruct.experiment.steps import (
    DATA_FILE,
    EXECUTORS,
    MODEL_DIR,
    Backends,
    StepContext,
    StepFailed,
    StepInput,
)
from explore_instruct.runstore.connection import connect, transaction

DB_FILE = "explore_instruct.db"
STEP_FILE = "step.json"
SPEC_FILE = "spec.resolved.yaml"
ARTEFACTS = "artefacts"

SCHEMA = """
CREATE TABLE IF NOT EXISTS artefacts (
    key TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    path TEXT NOT NULL,
    digest TEXT NOT NULL,
    info TEXT NOT NULL,
    weights_deleted INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS steps (
    step_id TEXT PRIMARY KEY,
    key TEXT,
    status TEXT NOT NULL,
    reason TEXT,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    step_id TEXT NOT NULL,
    key TEXT,
    event TEXT NOT NULL,
    reason TEXT,
    at REAL NOT NULL
);
"""

# math-verify's time limits need the main thread (elsewhere each grading spawns a process): math
# steps are short, so they run there, between the other steps' completions.
MAIN_THREAD_KINDS = ("math",)

# Statuses shown per step: pending, queued (waiting for a resource), running, done (ran now), cached
# (reused), failed, blocked.
FINISHED = ("done", "cached")


@dataclass
class StepState:
    step: Step
    status: str = "pending"
    key: str | None = None
    reason: str | None = None
    path: Path | None = None
    info: dict[str, Any] = field(default_factory=dict)
    digest: str | None = None


ProgressHook = Callable[[StepState], None]


class ExperimentDB:
    """The experiment's SQLite file: finished artefacts by key, each step's latest status, an event log."""

    def __init__(self, path: Path) -> None:
        self.conn = connect(path)
        self.conn.executescript(SCHEMA)
        self.lock = threading.Lock()

    def close(self) -> None:
        self.conn.close()

    def artefact(self, key: str) -> dict[str, Any] | None:
        with self.lock:
            row = self.conn.execute("SELECT * FROM artefacts WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        return {**dict(row), "info": json.loads(row["info"])}

    def add_artefact(self, key: str, kind: str, path: Path, digest: str, info: dict[str, Any]) -> None:
        with self.lock, transaction(self.conn):
            self.conn.execute(
                "INSERT OR REPLACE INTO artefacts (key, kind, path, digest, info, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (key, kind, str(path), digest, json.dumps(info), time.time()),
            )

    def forget_artefact(self, key: str) -> None:
        with self.lock, transaction(self.conn):
            self.conn.execute("DELETE FROM artefacts WHERE key = ?", (key,))

    def mark_weights_deleted(self, key: str) -> None:
        with self.lock, transaction(self.conn):
            self.conn.execute("UPDATE artefacts SET weights_deleted = 1 WHERE key = ?", (key,))

    def set_step(self, state: StepState, event: str | None = None) -> None:
        now = time.time()
        with self.lock, transaction(self.conn):
            self.conn.execute(
                "INSERT OR REPLACE INTO steps (step_id, key, status, reason, updated_at) VALUES (?, ?, ?, ?, ?)",
                (state.step.id, state.key, state.status, state.reason, now),
            )
            if event:
                self.conn.execute(
                    "INSERT INTO events (step_id, key, event, reason, at) VALUES (?, ?, ?, ?, ?)",
                    (state.step.id, state.key, event, state.reason, now),
                )

    def step_rows(self) -> dict[str, dict[str, Any]]:
        with self.lock:
            return {r["step_id"]: dict(r) for r in self.conn.execute("SELECT * FROM steps")}

    def events(self, event: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT * FROM events" + (" WHERE event = ?" if event else "") + " ORDER BY id"
        with self.lock:
            return [dict(r) for r in self.conn.execute(sql, (event,) if event else ())]


@contextmanager
def experiment_lock(out_dir: Path) -> Iterator[None]:
    """One process per output folder (a second one would race for the same artefacts)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    fh = (out_dir / ".lock").open("w")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        raise UserError(f"{out_dir}: another experiment process is running on this folder") from None
    try:
        yield
    finally:
        fcntl.flock(fh, fcntl.LOCK_UN)
        fh.close()


def artefact_dir(out_dir: Path, kind: str, key: str) -> Path:
    return out_dir / ARTEFACTS / kind / key[:16]


def _content_digest(step: Step, path: Path, key: str) -> str:
    """What later keys depend on: a dataset by the records it holds, anything else by its key."""
    return file_digest(path / DATA_FILE) if step.kind == "data" else key


class Runner:
    def __init__(
        self,
        plan: Plan,
        out_dir: str | Path,
        *,
        backends: Backends | None = None,
        only: list[str] | None = None,
        progress: ProgressHook | None = None,
        read_only: bool = False,
    ) -> None:
        self.plan = plan
        self.read_only = read_only  # a dry run or a results pass: look, never write
        self.out_dir = Path(out_dir).resolve()
        self.backends = backends or Backends()
        self.cells = select_cells(plan, only)
        self.steps = steps_for(plan, self.cells)
        self.states = {s.id: StepState(s) for s in self.steps}
        self.progress = progress or (lambda _s: None)
        workers = plan.spec.runner.llm_workers
        self._resources = {LLM: threading.Semaphore(workers), DEVICE: threading.Semaphore(1)}
        self._key_locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._failed_keys: dict[str, str] = {}  # a key that failed in this run is not tried again by a twin
        self._stopping = threading.Event()  # set when the run is interrupted: queued steps do not start
        self.db: ExperimentDB | None = None

    # --- lookups ----------------------------------------------------------------------------

    def _resource(self, name: str) -> threading.Semaphore:
        with self._guard:
            return self._resources.setdefault(name, threading.Semaphore(1))

    def _key_lock(self, key: str) -> threading.Lock:
        with self._guard:
            return self._key_locks.setdefault(key, threading.Lock())

    def _finished(self, step: Step, key: str) -> dict[str, Any] | None:
        """The recorded artefact for `key`, adopting a finished folder the database missed."""
        assert self.db is not None
        row = self.db.artefact(key)
        path = artefact_dir(self.out_dir, step.kind, key)  # not the stored path: the folder may have moved
        if row is not None and path.is_dir():
            return {**row, "path": str(path)}
        marker = path / STEP_FILE
        if marker.is_file():  # renamed into place, then killed before the database write
            saved = json.loads(marker.read_text(encoding="utf-8"))
            if saved.get("key") == key:
                adopted = {"key": key, "kind": step.kind, "digest": saved["digest"], "info": saved["info"]}
                if not self.read_only:
                    self.db.add_artefact(key, step.kind, path, saved["digest"], saved["info"])
                return {**adopted, "path": str(path)}
        if row is not None and not self.read_only:
            self.db.forget_artefact(key)  # its folder was removed by hand: make it again
        return None

    def key_of(self, step: Step) -> str | None:
        """The step's key, once every input's digest is known (else None)."""
        digests = []
        for dep in step.deps:
            d = self.states[dep].digest if dep in self.states else None
            if d is None:
                return None
            digests.append(d)
        return step_key(step, digests)

    # --- running ----------------------------------------------------------------------------

    def _set(self, state: StepState, status: str, reason: str | None = None, event: str | None = None) -> None:
        state.status, state.reason = status, reason
        assert self.db is not None
        self.db.set_step(state, event)
        self.progress(state)

    def _adopt(self, state: StepState, row: dict[str, Any]) -> None:
        state.path, state.info, state.digest = Path(row["path"]), row["info"], row["digest"]

    def _train_reusable(self, state: StepState, row: dict[str, Any]) -> bool:
        """A model whose weights were deleted is reusable only if every answer it feeds exists."""
        if (Path(row["path"]) / MODEL_DIR / "config.json").is_file():
            return True  # the weights are there (the folder, not the database, is the truth)
        for s in self.steps:
            if s.kind == "answer" and state.step.id in s.deps:
                key = step_key(s, [row["digest"]])
                if self._finished(s, key) is None:
                    return False
        return True

    def _execute(self, state: StepState) -> tuple[Path, dict[str, Any], str, bool]:
        """Run one step in a worker thread; returns (final folder, info, digest, whether it ran)."""
        step, key = state.step, state.key
        assert key is not None
        final = artefact_dir(self.out_dir, step.kind, key)
        with ExitStack() as stack:
            for name in sorted(step.resources):
                stack.enter_context(self._resource(name))
            stack.enter_context(self._key_lock(key))
            if self._stopping.is_set():
                raise StepFailed("not started: the run was interrupted")
            if key in self._failed_keys:
                raise StepFailed(self._failed_keys[key])
            self._set(state, "running")  # only now: until here it waited for its resources
            row = self._finished(step, key)  # another cell may have made it meanwhile
            if row is not None and (step.kind != "train" or self._train_reusable(state, row)):
                return Path(row["path"]), row["info"], row["digest"], False
            work = final if step.in_place else final.with_name(f".{final.name}.partial")
            if not step.in_place:
                shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True, exist_ok=True)
            ctx = StepContext(
                self.plan,
                self.out_dir,
                work,
                key,
                {d: StepInput(self.states[d].path or Path(), self.states[d].info) for d in step.deps},
                self.backends,
            )
            info = EXECUTORS[step.kind](step, ctx)
            digest = _content_digest(step, work, key)
            atomic_write_text(work / STEP_FILE, json.dumps({"key": key, "digest": digest, "info": info}) + "\n")
            if not step.in_place:
                shutil.rmtree(final, ignore_errors=True)
                work.rename(final)
            return final, info, digest, True

    def _ready(self) -> list[StepState]:
        ready = []
        for state in self.states.values():
            if state.status != "pending":
                continue
            deps = [self.states[d] for d in state.step.deps]
            bad = next((d for d in deps if d.status in ("failed", "blocked")), None)
            if bad is not None:
                self._set(state, "blocked", f"needs {bad.step.id} ({bad.status})")
            elif all(d.status in FINISHED for d in deps):
                ready.append(state)
        return ready

    def _after_answer(self, state: StepState) -> None:
        """With `delete_weights`, drop a model's weights once every answer it feeds exists."""
        if not self.plan.spec.runner.delete_weights:
            return
        train = self.states[state.step.deps[0]]
        feeds = [
            s for s in self.states.values() if s.step.kind == "answer" and s.step.deps[0] in self._same_model(train)
        ]
        if not all(s.status in FINISHED for s in feeds) or train.path is None:
            return
        from explore_instruct.train.sft import LOG_FILE, SETTINGS_FILE

        model = train.path / MODEL_DIR
        if model.is_dir():
            for item in model.iterdir():
                if item.name not in (LOG_FILE, SETTINGS_FILE):
                    shutil.rmtree(item) if item.is_dir() else item.unlink()
        assert self.db is not None and train.key is not None
        self.db.mark_weights_deleted(train.key)

    def _same_model(self, train: StepState) -> set[str]:
        return {s.step.id for s in self.states.values() if s.step.kind == "train" and s.key == train.key}

    def run(self) -> dict[str, StepState]:
        """Run every selected step; returns the final state of each."""
        with experiment_lock(self.out_dir):
            atomic_write_text(self.out_dir / SPEC_FILE, spec_yaml(self.plan.spec))
            for partial in (self.out_dir / ARTEFACTS).glob("*/.*.partial"):
                shutil.rmtree(partial, ignore_errors=True)  # a step killed mid-way: it runs again
            self.db = ExperimentDB(self.out_dir / DB_FILE)
            try:
                self._loop()
            finally:
                self.db.close()
        return self.states

    def _loop(self) -> None:
        # Threads are cheap and most of them wait on a resource: enough that a step waiting for the
        # device never keeps a ready LLM or data step from starting.
        workers = self.plan.spec.runner.llm_workers + len({s.kind for s in self.steps}) + 8
        running: dict[Future[tuple[Path, dict[str, Any], str, bool]], StepState] = {}
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="step") as pool:
            try:
                while True:
                    for state in self._ready():
                        state.key = self.key_of(state.step)
                        assert state.key is not None
                        row = self._finished(state.step, state.key)
                        if row is not None and (state.step.kind != "train" or self._train_reusable(state, row)):
                            self._adopt(state, row)
                            self._set(state, "cached", event="cached")
                            continue
                        state.status = "queued"  # waits in the pool for its resources
                        self.progress(state)
                        if state.step.kind in MAIN_THREAD_KINDS:
                            running[self._run_here(state)] = state
                        else:
                            running[pool.submit(self._execute, state)] = state
                    if not running:
                        if any(s.status == "pending" for s in self.states.values()):
                            continue  # newly blocked steps may unblock nothing; loop marks them
                        break
                    done, _ = wait(running, return_when=FIRST_COMPLETED)
                    for future in done:
                        self._collect(running.pop(future), future)
            except BaseException:
                self._stopping.set()
                for future in running:
                    future.cancel()
                raise

    def _run_here(self, state: StepState) -> Future[tuple[Path, dict[str, Any], str, bool]]:
        """Run a step in the main thread (a finished future either way)."""
        future: Future[tuple[Path, dict[str, Any], str, bool]] = Future()
        try:
            future.set_result(self._execute(state))
        except Exception as exc:
            future.set_exception(exc)
        return future

    def _collect(self, state: StepState, future: Future[tuple[Path, dict[str, Any], str, bool]]) -> None:
        assert self.db is not None and state.key is not None
        try:
            path, info, digest, ran = future.result()
        except StepFailed as exc:
            self._failed_keys.setdefault(state.key, str(exc))
            self._set(state, "failed", str(exc), event="failed")
            return
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:  # any fault of one step: recorded, the other cells go on
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            self._failed_keys.setdefault(state.key, f"{type(exc).__name__}: {reason}")
            self._set(state, "failed", self._failed_keys[state.key], event="failed")
            return
        state.path, state.info, state.digest = path, info, digest
        if not ran:  # another cell's identical step finished it while this one waited
            self._set(state, "cached", event="cached")
            return
        self.db.add_artefact(state.key, state.step.kind, path, digest, info)
        self._set(state, "done", event="ran")
        if state.step.kind == "answer":
            self._after_answer(state)


def recorded_states(plan: Plan, out_dir: str | Path) -> dict[str, StepState]:
    """Every step of the plan as the output folder records it, without running anything: finished
    artefacts are `cached`, a step that failed last time keeps its reason, the rest are `pending`."""
    runner = Runner(plan, out_dir, read_only=True)
    runner.db = ExperimentDB(runner.out_dir / DB_FILE)
    try:
        last = runner.db.step_rows()
        for state in runner.states.values():
            key = runner.key_of(state.step)
            row = runner._finished(state.step, key) if key is not None else None
            state.key = key
            if row is not None:
                runner._adopt(state, row)
                state.status = "cached"
            elif state.step.id in last and last[state.step.id]["status"] in ("failed", "blocked"):
                state.status, state.reason = last[state.step.id]["status"], last[state.step.id]["reason"]
    finally:
        runner.db.close()
    return runner.states


def training_runs(out_dir: str | Path) -> int:
    """How many training jobs this output folder has run (for tests and the summary)."""
    db = ExperimentDB(Path(out_dir) / DB_FILE)
    try:
        return sum(1 for e in db.events("ran") if e["step_id"].startswith("train:"))
    finally:
        db.close()
