"""`batch`: read batch results back into a run (`import`) and show a run's batches (`status`).

Thin wrappers over `llm/batch.py`: the matching, checking and retry rules live there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from explore_instruct.cli.vocabulary import AliasedCommand, Group, OldRunDir, RunDirOption, run_dir_given
from explore_instruct.runstore import BatchStore, RunStore

console = Console(stderr=True)

batch_app = typer.Typer(
    cls=Group,
    name="batch",
    help="Batch mode for enrichment: import the results of a batch (`import`), show a run's batches (`status`).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@batch_app.command("import", cls=AliasedCommand)
def import_cmd(
    results: Annotated[Path, typer.Argument(metavar="OUTPUT", help="The results file (JSONL, one line per request).")],
    old_second: Annotated[Path | None, typer.Argument(metavar="OUTPUT", hidden=True, show_default=False)] = None,
    run_dir: Annotated[Path | None, typer.Option("--run-dir", "-r", help="The run that wrote the batch input.")] = None,
) -> None:
    """Import a batch's results; then `run CONFIG --resume` continues the run."""
    from explore_instruct.llm.batch import import_results
    from explore_instruct.stages import generate

    if old_second is not None:  # the old form, `batch import RUN_DIR OUTPUT`
        run_dir, results = run_dir_given(run_dir, results), old_second
    run_dir = run_dir_given(run_dir, None)
    store = RunStore.open(run_dir, write=True)
    try:
        summary = import_results(store, results, {generate.STAGE: generate.parse_reply})
    finally:
        store.close()
    batches = ", ".join(str(b) for b in summary.batches)
    console.print(
        f"imported {summary.lines} lines into batch {batches}: {summary.ok} replies kept, {summary.failed} "
        "lines to send again; continue with `explore-instruct run CONFIG --resume`",
        highlight=False,
    )


@batch_app.command("status", cls=AliasedCommand)
def status_cmd(run_dir: RunDirOption = None, old_run_dir: OldRunDir = None) -> None:
    """List the run's batches: provider, ids, state and request counts."""
    run_dir = run_dir_given(run_dir, old_run_dir)
    store = RunStore.open(run_dir)
    try:
        rows = BatchStore(store.conn).overview()
    finally:
        store.close()
    if not rows:
        console.print(f"{run_dir}: no batches", highlight=False)
        return
    table = Table(title=f"batches of {run_dir}", title_justify="left")
    for column in ("#", "provider", "input file", "batch id", "state", "requests", "replies"):
        table.add_column(column)
    for r in rows:
        table.add_row(
            str(r.id), r.provider, r.input_file, r.batch_id or "", r.outcome or r.status, str(r.requests), str(r.ok)
        )
    console.print(table)


def register(app: typer.Typer) -> None:
    app.add_typer(batch_app)
