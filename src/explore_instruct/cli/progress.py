"""The one way the CLI draws progress bars: on stderr (stdout stays free for results), one look everywhere.

Three shapes of caller use it: the pipeline's stages (`StageProgress`, the `context.Progress` sink), code
that takes a "start(description, total) -> advance(n)" hook (`hook_progress`, used by `analyze`), and
code that reports "done of total" (`count_progress`, used by `filter-file` and `baseline human-curated`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

console = Console(stderr=True)

# Shown on the first bar of the first stage that calls the model, until the first reply arrives:
# on CPU that wait is long enough to look like a hang.
LOCAL_FIRST_REPLY_HINT = "loading the embedded model; on CPU the first reply can take a minute"
REMOTE_FIRST_REPLY_HINT = "waiting for the first reply"


def bars(*, transient: bool, label_width: int = 0) -> Progress:
    """A rich Progress with the project's columns: label, bar, done/total, elapsed, then a note."""
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
