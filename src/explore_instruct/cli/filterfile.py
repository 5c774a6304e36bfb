"""`filter-file`: the ROUGE-L diversity filter on any JSON/JSONL record file, outside a run."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

err = Console(stderr=True)

# Inputs at least this long show a progress bar (on a terminal).
_PROGRESS_MIN = 20_000


def _texts_and_groups(
    path: Path, records: list[dict[str, Any]], field: str, group_field: str | None
) -> tuple[list[str], list[str] | None]:
    from explore_instruct.errors import UserError

    texts: list[str] = []
    groups: list[str] | None = [] if group_field else None
    for i, rec in enumerate(records):
        if field not in rec:
            raise UserError(f"{path}: record {i} has no field {field!r}")
        value = rec[field]
        if not isinstance(value, str):
            raise UserError(f"{path}: record {i}: field {field!r} is a {type(value).__name__}, expected a string")
        texts.append(value)
        if groups is not None and group_field is not None:
            if group_field not in rec:
                raise UserError(f"{path}: record {i} has no group field {group_field!r}")
            # Any JSON value names a group; equal values (as JSON) are the same group.
            groups.append(json.dumps(rec[group_field], sort_keys=True, ensure_ascii=False))
    return texts, groups


@contextmanager
def _progress_bar(total: int) -> Iterator[Callable[[int, int], None] | None]:
    """A progress callback drawing a bar on a terminal for long inputs; None otherwise."""
    if total < _PROGRESS_MIN or not err.is_terminal:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("filtering"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err) as bar:
        task = bar.add_task("filter", total=total)
        yield lambda done, _total: bar.update(task, completed=done)


def filter_file(
    input_path: Annotated[
        Path, typer.Argument(metavar="IN", help="Records: an Alpaca-style JSON list or JSONL (detected).")
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="Kept records, in input order (.jsonl: JSONL, .json: a JSON list, otherwise the input's format).",
        ),
    ],
    threshold: Annotated[
        float, typer.Option(help="Drop a record whose ROUGE-L F1 with a kept one is greater than this.")
    ] = 0.7,
    field: Annotated[str, typer.Option(help="The text field to compare.")] = "instruction",
    group_field: Annotated[
        str | None,
        typer.Option(help="Compare only records with the same value of this field (e.g. a task)."),
    ] = None,
    tokenizer: Annotated[
        str,
        typer.Option(
            help="rouge (rouge-score's, the default), unicode (words of any script) or cjk "
            "(unicode, one token per Han/kana character). The last two deliberately differ from "
            "rouge-score, which drops everything outside \\[a-z0-9]."
        ),
    ] = "rouge",
    stem: Annotated[bool, typer.Option(help="Porter-stem tokens, like rouge-score's use_stemmer.")] = False,
    explain: Annotated[
        Path | None,
        typer.Option(
            help="Also write the dropped records (JSONL): index, dup_of (the kept record it collided "
            "with, highest score), score, and both texts."
        ),
    ] = None,
    workers: Annotated[
        int | None, typer.Option(help="Processes (default: all cores for large inputs; 1 = none).")
    ] = None,
) -> None:
    """Keep a record only if its ROUGE-L F1 with every record kept before it is at most the threshold."""
    from explore_instruct.datafile import format_for_path, read_records, write_records
    from explore_instruct.errors import UserError
    from explore_instruct.rouge import TOKENIZERS, diversity_filter

    if tokenizer not in TOKENIZERS:
        raise UserError(f"--tokenizer must be one of {', '.join(TOKENIZERS)}, not {tokenizer!r}")
    if threshold != threshold:  # NaN
        raise UserError("--threshold must be a number")
    if workers is not None and workers < 1:
        raise UserError("--workers must be at least 1")
    started = time.perf_counter()
    records, fmt = read_records(input_path)
    texts, groups = _texts_and_groups(input_path, records, field, group_field)

    with _progress_bar(len(texts)) as on_progress:
        result = diversity_filter(
            texts,
            threshold,
            groups=groups,
            tokenizer=tokenizer,  # type: ignore[arg-type]
            stem=stem,
            workers=workers,
            progress=on_progress,
        )

    write_records(out, [r for r, k in zip(records, result.kept, strict=True) if k], format_for_path(out, default=fmt))
    if explain is not None:
        dropped = [
            {
                "index": i,
                "dup_of": result.dup_of[i],
                "score": result.score[i],
                "text": texts[i],
                "dup_text": texts[d] if (d := result.dup_of[i]) is not None else None,
                **({"group": records[i][group_field]} if group_field else {}),
            }
            for i, k in enumerate(result.kept)
            if not k
        ]
        write_records(explain, dropped, "jsonl")
    n, k = len(texts), result.n_kept
    pct = 100.0 * k / n if n else 100.0
    typer.echo(f"kept {k} / {n} ({pct:.1f} %) in {time.perf_counter() - started:.2f} s → {out}")


def register(app: typer.Typer) -> None:
    """Add the `filter-file` command to `app`."""
    app.command("filter-file")(filter_file)
