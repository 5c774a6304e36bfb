"""`filter-file`: the ROUGE-L diversity filter on any JSON/JSONL record file, outside a run.

A thin wrapper: the work is `explore_instruct.filter_file.filter_file`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from explore_instruct.cli.vocabulary import (
    AliasedCommand,
    EmbedApiKeyEnv,
    EmbedBackend,
    EmbedBaseUrl,
    EmbedModel,
)

# Inputs at least this long draw a progress bar.
_PROGRESS_MIN = 20_000


def filter_file(
    input_path: Annotated[
        Path, typer.Argument(metavar="INPUT", help="Records: an Alpaca-style JSON list or JSONL (detected).")
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
        float, typer.Option(help="Drop a record whose ROUGE-L F1 with a kept one is greater than this (0 to 1).")
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
    semantic: Annotated[
        float | None,
        typer.Option(
            metavar="THRESHOLD",
            help="Then drop a record whose embedding's cosine similarity with a kept one is greater than this "
            "(one embedding per record kept by ROUGE-L; requests of 64 texts).",
        ),
    ] = None,
    embed_backend: EmbedBackend = "local",
    embed_base_url: EmbedBaseUrl = None,
    embed_model: EmbedModel = None,
    embed_api_key_env: EmbedApiKeyEnv = None,
) -> None:
    """Keep a record only if its ROUGE-L F1 with every record kept before it is at most the threshold."""
    from explore_instruct.cli.progress import count_progress
    from explore_instruct.filter_file import FilterFileOptions
    from explore_instruct.filter_file import filter_file as run_filter
    from explore_instruct.llm.embeddings import build_embedder

    options = FilterFileOptions(threshold, field, group_field, tokenizer, stem, workers, semantic)
    options.check()
    embedder = None
    if semantic is not None:
        embedder = build_embedder(
            embed_backend, base_url=embed_base_url, model=embed_model, api_key_env=embed_api_key_env
        )
    started = time.perf_counter()
    with count_progress("filtering", min_total=_PROGRESS_MIN) as on_progress:
        result = run_filter(input_path, out, options, explain=explain, progress=on_progress, embedder=embedder)
    pct = 100.0 * result.kept / result.total if result.total else 100.0
    typer.echo(f"kept {result.kept} / {result.total} ({pct:.1f} %) in {time.perf_counter() - started:.2f} s → {out}")


def register(app: typer.Typer) -> None:
    """Add the `filter-file` command to `app`."""
    app.command("filter-file", cls=AliasedCommand)(filter_file)
