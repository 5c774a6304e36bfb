"""`decontaminate`: drop the records of any JSON/JSONL file that share a word n-gram with evaluation questions.

A thin wrapper: the work is `explore_instruct.decontaminate.decontaminate_file`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from explore_instruct.cli.vocabulary import AliasedCommand
from explore_instruct.decontaminate import DEFAULT_NGRAM


def decontaminate(
    records: Annotated[
        Path, typer.Argument(metavar="RECORDS", help="Records (instruction, input, output): a JSON list or JSONL.")
    ],
    against: Annotated[
        list[Path],
        typer.Option(help="A question file of the evaluation format (question, std_answer, question_id); repeatable."),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out", "-o", help="The clean records, in input order (.jsonl / .json, otherwise the input's format)."
        ),
    ],
    ngram: Annotated[int, typer.Option(help="Words in a shared sequence that count as contamination.")] = DEFAULT_NGRAM,
) -> None:
    """Remove records whose instruction, input or output shares an n-gram with a question or its answer."""
    from explore_instruct.decontaminate import decontaminate_file

    result = decontaminate_file(records, against, out, ngram)
    for source, n in result.removed.items():
        typer.echo(f"{source}: removed {n}")
    typer.echo(f"kept {result.kept} / {result.total} → {out}")


def register(app: typer.Typer) -> None:
    """Add the `decontaminate` command to `app`."""
    app.command("decontaminate", cls=AliasedCommand)(decontaminate)
