"""`experiment`: run a whole study (datasets x ablations -> train -> answer -> judge / math) as one command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from explore_instruct.cli.progress import StepTable, quiet_libraries
from explore_instruct.cli.vocabulary import AliasedCommand

console = Console(stderr=True)
out_console = Console()


def _experiment(
    spec: Annotated[Path, typer.Argument(metavar="SPEC", help="The experiment spec (YAML).")],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Output folder; default runs/experiment-<spec>.")
    ] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue a killed or finished experiment.")] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print cells, steps and an estimate; run nothing.")
    ] = False,
    only: Annotated[list[str] | None, typer.Option("--only", help="Run only this cell (repeatable).")] = None,
) -> None:
    """Run the paper's study for your domain: every dataset and ablation cell, trained, answered, judged."""
    from explore_instruct.errors import RunStopped
    from explore_instruct.experiment import default_out, load_plan, run_experiment
    from explore_instruct.experiment.plan import select_cells, steps_for
    from explore_instruct.experiment.preflight import preflight

    plan = load_plan(spec, strict=not dry_run)
    out_dir = out or default_out(spec)
    # The same checks as the run's own, here before the live table (a refusal stays one line).
    preflight(plan, spec, out_dir, only=only, resume=resume, dry_run=dry_run)
    for warning in plan.warnings:
        console.print(f"[yellow]warning:[/] {warning} (needed where the study runs)", highlight=False)
    if dry_run:
        _print_preview(plan, out_dir, only)
        return
    steps = steps_for(plan, select_cells(plan, only))
    with quiet_libraries(), StepTable([(s.cells[0], s.id) for s in steps]) as table:
        _plan, states, _result = run_experiment(spec, out_dir, resume=resume, only=only, progress=table)
    ran = sum(s.status == "done" for s in states.values())
    reused = sum(s.status == "cached" for s in states.values())
    failed = [s for s in states.values() if s.status == "failed"]
    console.print(f"{ran} steps ran, {reused} reused, {len(failed)} failed; results in {out_dir}", highlight=False)
    # soft_wrap: the file's lines as they are, never folded at the width rich assumes off a terminal
    out_console.print(
        (out_dir / "results.md").read_text(encoding="utf-8"), markup=False, highlight=False, soft_wrap=True
    )
    if failed:
        raise RunStopped(
            f"{len(failed)} step(s) failed (first: {failed[0].step.id}: {failed[0].reason}); "
            "the other cells finished; fix the cause and rerun with --resume"
        )


def _print_preview(plan, out_dir: Path, only: list[str] | None) -> None:  # type: ignore[no-untyped-def]
    from explore_instruct.experiment.preview import preview

    p = preview(plan, out_dir, only)
    table = Table(title=f"experiment {plan.spec.name}: {len(plan.cells)} cells", title_justify="left")
    for col in ("cell", "step", "action"):
        table.add_column(col)
    for cell, step_id, action in p.rows:
        table.add_row(cell, step_id, f"[{'cyan' if action == 'reuse' else 'yellow'}]{action}[/]")
    out_console.print(table)
    out_console.print(
        f"estimate (upper bounds): {p.llm_calls} LLM calls (generation and judging), {p.answers} answers "
        f"from trained models, at most {p.trainings} training runs over {p.train_examples} examples in all",
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    app.command("experiment", cls=AliasedCommand)(_experiment)
