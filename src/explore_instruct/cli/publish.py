"""`push`: a run's Hugging Face export (or a study's card and results) to a dataset repository on the Hub."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from explore_instruct.cli.pipeline import Analysis, License, Which, check_license, check_which
from explore_instruct.cli.vocabulary import AliasedCommand
from explore_instruct.errors import UserError

console = Console(stderr=True)
out = Console()


def _push(
    folder: Annotated[
        Path, typer.Argument(metavar="FOLDER", help="A run directory, or an experiment's output folder (a study).")
    ],
    repo_id: Annotated[str, typer.Argument(metavar="REPO_ID", help="The dataset repository: owner/name.")],
    which: Which = "sample",
    private: Annotated[bool, typer.Option("--private", help="Create the repository private.")] = False,
    revision: Annotated[str, typer.Option("--revision", help="The branch to commit to (made if missing).")] = "main",
    token_env: Annotated[
        str, typer.Option("--token-env", help="The NAME of the environment variable holding the Hub token.")
    ] = "HF_TOKEN",
    license_id: License = None,
    analysis: Analysis = None,
) -> None:
    """Publish a run (its hf export and card) or a study (its card and results) as a Hugging Face dataset."""
    from explore_instruct.cli.progress import hook_progress
    from explore_instruct.publish.hub import push_files, read_token
    from explore_instruct.publish.options import CardOptions
    from explore_instruct.publish.sources import experiment_files, is_experiment, run_files

    check_which(which)
    token = read_token(token_env)  # before any work: a missing token costs nothing
    if not repo_id.strip() or repo_id.count("/") > 1 or any(c.isspace() for c in repo_id):
        raise UserError(f"{repo_id!r}: a repository id is owner/name")
    card = CardOptions(license=check_license(license_id), analysis=analysis, repo_id=repo_id)
    if is_experiment(folder):
        files, what = experiment_files(folder, card), "study"
    else:
        files, where = run_files(folder, which, card)
        what = f"{which} export (written to {where})"
    with hook_progress() as progress:
        result = push_files(
            files,
            repo_id,
            token=token,
            revision=revision,
            private=private,
            message=f"explore-instruct: {'the study' if what == 'study' else which + ' data'} and its card",
            progress=progress,
        )
    if result.commit is None:
        line = f"{result.url} ({revision}) already holds this {what}: no new commit"
        out.print(line, highlight=False, soft_wrap=True)
        return
    deleted = f", deleted {len(result.deleted)}" if result.deleted else ""
    out.print(
        f"pushed the {what} to {result.url} ({revision}): {len(result.uploaded)} files changed{deleted}, "
        f"commit {result.commit[:12]}",
        highlight=False,
        soft_wrap=True,
    )


def register(app: typer.Typer) -> None:
    app.command("push", cls=AliasedCommand)(_push)
