"""The one way the CLI shows progress: on stderr (stdout stays free for results), one look everywhere.

On a terminal, bars; anywhere else (a file, a pipe, CI, nohup) plain lines such as `generate: 12/40
0:00:41`, one each time a task moves by a tenth of its total, written as they happen (a bar's redraws
would only reach a file when it stops).

Three shapes of caller use it: the pipeline's stages (`StageProgress`, the `context.Progress` sink), code
that takes a "start(description, total) -> advance(n)" hook (`hook_progress`, used by `analyze`), and
code that reports "done of total" (`count_progress`, used by `filter-file` and `baseline human-curated`).
"""

from __future__ import annotations

import datetime
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, Task, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

console = Console(stderr=True)

# Off a terminal a task prints a line each time it moves by this share of its total (and when it ends).
LINE_EVERY = 0.1

# Shown on the first bar of the first stage that calls the model, until the first reply arrives:
# on CPU that wait is long enough to look like a hang.
LOCAL_FIRST_REPLY_HINT = "loading the embedded model; on CPU the first reply can take a minute"
REMOTE_FIRST_REPLY_HINT = "waiting for the first reply"


class LineProgress(Progress):
    """A rich Progress that draws nothing and prints a plain line per tenth of each task instead.

    It keeps rich's task model (totals, counts, fields), so callers treat it as any Progress.
    """

    def __init__(self, target: Console) -> None:
        super().__init__(console=target, disable=True)
        self._printed: dict[TaskID, tuple[float, float | None]] = {}  # what each task's last line showed

    def add_task(
        self,
        description: str,
        start: bool = True,
        total: float | None = 100.0,
        completed: int = 0,
        visible: bool = True,
        **fields: Any,
    ) -> TaskID:
        task_id = super().add_task(
            description, start=start, total=total, completed=completed, visible=visible, **fields
        )
        self._line(task_id, force=True)
        return task_id

    def update(self, task_id: TaskID, **changes: Any) -> None:
        super().update(task_id, **changes)
        self._line(task_id)

    def advance(self, task_id: TaskID, advance: float = 1) -> None:
        super().advance(task_id, advance)
        self._line(task_id)

    def stop(self) -> None:
        for task_id in list(self._printed):
            self._line(task_id, force=True)

    def _line(self, task_id: TaskID, *, force: bool = False) -> None:
        with self._lock:
            task = self._tasks[task_id]
            last = self._printed.get(task_id)
            now = (task.completed, task.total)
            if now == last or not (force or last is None or _moved_a_step(task, last[0])):
                return
            self._printed[task_id] = now
        self.console.print(_line_text(task), markup=False, highlight=False, soft_wrap=True)


def _moved_a_step(task: Task, last: float) -> bool:
    if task.total and task.completed >= task.total:
        return True
    step = max(1.0, (task.total or 0) * LINE_EVERY) if task.total else 10.0
    return task.completed // step > last // step


def _line_text(task: Task) -> str:
    total = f"/{task.total:.0f}" if task.total is not None else ""
    elapsed = datetime.timedelta(seconds=int(task.elapsed or 0))
    note = task.fields.get("note") or ""
    return f"{task.description}: {task.completed:.0f}{total} {elapsed}" + (f" ({note})" if note else "")


# Libraries whose log lines (model loading, advice, warnings) are not the user's output.
_CHATTY_LOGGERS = ("transformers", "datasets", "huggingface_hub", "trl", "accelerate", "peft", "urllib3", "filelock")


# What tells those libraries (and tqdm, for every bar drawn with it) to keep quiet.
_QUIET_ENV = {
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "TQDM_DISABLE": "1",
}


@contextmanager
def quiet_libraries(*, on_terminal: bool = True) -> Iterator[None]:
    """Keep other libraries' progress bars and log lines (model loading, downloads, advice) out of the output.

    With `on_terminal=False` only when stderr is not a terminal (a log file has no use for a bar's redraws).
    The environment reaches the libraries imported later, the loggers those already imported; errors
    still show. Everything is as it was afterwards.
    """
    if console.is_terminal and not on_terminal:
        yield
        return
    env = {name: os.environ.get(name) for name in _QUIET_ENV}
    levels = {name: logging.getLogger(name).level for name in _CHATTY_LOGGERS}
    bars_were_on = _transformers_bars(None)
    os.environ.update({name: value for name, value in _QUIET_ENV.items() if env[name] is None})
    for name in _CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        yield
    finally:
        for name, value in env.items():
            if value is None:
                os.environ.pop(name, None)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
        _transformers_bars(bars_were_on or False)


def _transformers_bars(on: bool | None) -> bool | None:
    """transformers' own switch for its bars, when it is imported: turned off (`on` None) or back on."""
    if "transformers" not in sys.modules:
        return None
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    if on:
        hf_logging.enable_progress_bar()
    elif on is None:
        hf_logging.disable_progress_bar()
    return was


def bars(*, transient: bool, label_width: int = 0) -> Progress:
    """A rich Progress with the project's columns: label, bar, done/total, elapsed, then a note.

    Off a terminal it is a `LineProgress`: plain lines, written as the work moves.
    """
    if not console.is_terminal:
        return LineProgress(console)
    label = f"[bold]{{task.description:<{label_width}}}" if label_width else "{task.description}"
    return Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("[dim]{task.fields[note]}"),
        console=console,
        transient=transient,
    )


class StageProgress:
    """Progress bars for pipeline stages, one per stage (implements `context.Progress`).

    `first_reply_hint` is shown beside the first model-calling stage's bar until it first moves.
    """

    def __init__(self, *, llm_stages: frozenset[str] = frozenset(), first_reply_hint: str = "") -> None:
        self._bars = bars(transient=False, label_width=9)
        self._tasks: dict[str, Any] = {}
        self._llm_stages = llm_stages
        self._hint = first_reply_hint
        self._hinted: str | None = None
        self._drawing = False

    def __enter__(self) -> StageProgress:
        # The bars are drawn from the first stage on: a command that stops before any (a run dir in
        # use, no tree yet) prints its one error line, not an empty progress line above it (rich's
        # stop() prints a newline off a terminal even when it drew nothing).
        self._drawing = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self._drawing and self._tasks:
            self._bars.stop()
        self._drawing = False

    def start(self, stage: str, total: int | None) -> None:
        note = ""
        if self._hint and self._hinted is None and stage in self._llm_stages:
            note, self._hinted = self._hint, stage
        if self._drawing and not self._tasks:
            self._bars.start()
        self._tasks[stage] = self._bars.add_task(stage, total=total, note=note)

    def advance(self, stage: str, amount: int = 1, *, total: int | None = None) -> None:
        task = self._tasks.get(stage)
        if task is None:
            return
        if total:
            self._bars.update(task, total=(self._task(task).total or 0) + total)
        if amount and stage == self._hinted:
            self._bars.update(task, note="")
            self._hinted = ""  # the hint has done its job; never shown again
        self._bars.advance(task, amount)

    def finish(self, stage: str) -> None:
        task = self._tasks.get(stage)
        if task is not None:
            self._bars.update(task, total=self._task(task).completed, note="")

    def _task(self, task_id: Any) -> Any:
        return self._bars.tasks[self._bars.task_ids.index(task_id)]


@contextmanager
def hook_progress() -> Iterator[Callable[[str, int], Callable[[int], None]]]:
    """A hook `start(description, total)` returning `advance(n)`; the bars vanish when done.

    Drawing starts with the first bar, so a command that fails before one prints only its error line.
    """
    prog = bars(transient=True)

    def start(description: str, total: int) -> Callable[[int], None]:
        if not prog.task_ids:
            prog.start()
        task = prog.add_task(description, total=total, note="")
        return lambda n: prog.advance(task, n)

    try:
        yield start
    finally:
        if prog.task_ids:
            prog.stop()


@contextmanager
def count_progress(label: str, *, min_total: int = 0) -> Iterator[Callable[[int, int | None], None]]:
    """A callback `update(done, total)` drawing one bar; the bar vanishes when done.

    The bar starts at the first update whose total is at least `min_total`, so short jobs draw nothing.
    """
    prog = bars(transient=True)
    task: list[Any] = []

    def update(done: int, total: int | None) -> None:
        if not task:
            if total is not None and total < min_total:
                return
            prog.start()
            task.append(prog.add_task(label, total=total, note=""))
        prog.update(task[0], completed=done, total=total)

    try:
        yield update
    finally:
        if task:
            prog.stop()


STEP_STYLE = {
    "pending": "dim",
    "queued": "yellow",
    "running": "bold yellow",
    "done": "green",
    "cached": "cyan",
    "failed": "bold red",
    "blocked": "red",
}
# Off a terminal, what a study's log says: a step starting and a step ending (queued is too chatty).
_STEP_LINE_STATUSES = frozenset({"running", "done", "cached", "failed", "blocked"})


class StepTable:
    """An experiment's steps: a live table on a terminal, else one plain line per step started or ended.

    Used as a context manager around the study, and called with each step's state as it changes.
    """

    def __init__(self, steps: list[tuple[str, str]]) -> None:
        self.rows = {step_id: (cell, "pending", "") for cell, step_id in steps}
        self._lock = threading.Lock()
        self._live = (
            Live(self.render(), console=console, refresh_per_second=4, transient=False) if console.is_terminal else None
        )

    def __enter__(self) -> StepTable:
        if self._live is not None:
            self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.stop()

    def render(self) -> Table:
        table = Table(title="experiment", title_justify="left")
        for col in ("cell", "step", "status", "note"):
            table.add_column(col)
        for step_id, (cell, status, note) in self.rows.items():
            table.add_row(cell, step_id.split(":", 1)[0], f"[{STEP_STYLE[status]}]{status}[/]", note)
        return table

    def __call__(self, state: Any) -> None:
        with self._lock:
            cell = self.rows[state.step.id][0]
            note = (state.reason or "")[:90]
            self.rows[state.step.id] = (cell, state.status, note)
            if self._live is not None:
                self._live.update(self.render())
                return
            if state.status not in _STEP_LINE_STATUSES:
                return
            ended = sum(status in _STEP_LINE_STATUSES - {"running"} for _, status, _ in self.rows.values())
            line = f"experiment {ended}/{len(self.rows)}: {state.step.id} ({cell}) {state.status}"
            console.print(line + (f": {note}" if note else ""), markup=False, highlight=False, soft_wrap=True)
