"""Analysis and baseline commands: `analyze`, and the `baseline` group.

`baseline_app` holds `human-curated`; the pipeline module adds `self-instruct` to the same group.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from explore_instruct.cli.vocabulary import (
    AliasedCommand,
    EmbedApiKeyEnv,
    EmbedBackend,
    EmbedBaseUrl,
    EmbedModel,
    Group,
)

err = Console(stderr=True)
out = Console()

baseline_app = typer.Typer(
    cls=Group,
    name="baseline",
    help="Build the paper's baseline datasets.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def analyze(
    datasets: Annotated[
        list[str],
        typer.Argument(
            metavar="DATASETS",
            help="NAME=PATH or PATH: a JSON/JSONL record file, a tree directory or a run directory.",
        ),
    ],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Folder for report.html, report.md, summary.json.")],
    seeds: Annotated[
        Path | None,
        typer.Option(
            help="Seed instructions: a record file, a tree or a run directory (its root's examples). "
            "Default: the root examples of the first tree given."
        ),
    ] = None,
    top_verbs: Annotated[int, typer.Option(help="Verbs in the verb–noun figure's inner ring.")] = 20,
    top_nouns: Annotated[int, typer.Option(help="Nouns per verb in the outer ring.")] = 4,
    batch_size: Annotated[int, typer.Option(help="Instructions per spaCy batch.")] = 256,
    workers: Annotated[int, typer.Option(help="spaCy worker processes (1 = in-process).")] = 1,
    embed_backend: EmbedBackend = "local",
    embed_base_url: EmbedBaseUrl = None,
    embed_model: EmbedModel = None,
    embed_api_key_env: EmbedApiKeyEnv = None,
) -> None:
    """Data-centric analysis: verb–noun diversity, overlap with the seeds, lengths and tree statistics."""
    from explore_instruct.analysis.datasets import default_seeds, load_datasets, load_seed_instructions
    from explore_instruct.analysis.report import AnalysisOptions
    from explore_instruct.analysis.report import analyze as run_analysis
    from explore_instruct.analysis.verbnoun import load_nlp
    from explore_instruct.cli.progress import hook_progress
    from explore_instruct.errors import UserError
    from explore_instruct.llm.embed_client import BlockingEmbeddings, EmbeddingClient
    from explore_instruct.llm.embeddings import build_embedder
    from explore_instruct.runstore import VectorCache

    if top_verbs < 1 or top_nouns < 1 or batch_size < 1 or workers < 1:
        raise UserError("--top-verbs, --top-nouns, --batch-size and --workers must be at least 1")
    # The embedding model's settings are checked before anything is read; its vectors are kept in
    # the report folder's embeddings.db, so a second analysis of the same data sends no request.
    embedder = build_embedder(embed_backend, base_url=embed_base_url, model=embed_model, api_key_env=embed_api_key_env)
    started = time.perf_counter()
    nlp = load_nlp()  # fail on a missing model before reading anything big
    loaded = load_datasets(datasets)
    seed_texts: list[str] | None
    note: str | None
    if seeds is not None:
        seed_texts = load_seed_instructions(seeds)
        note = f"{len(seed_texts)} seed instructions from {seeds}"
    else:
        found = default_seeds(loaded)
        seed_texts, note = (found[0], f"{len(found[0])} seed instructions: {found[1]}") if found else (None, None)
    options = AnalysisOptions(top_verbs=top_verbs, top_nouns=top_nouns, batch_size=batch_size, n_process=workers)
    out_dir.mkdir(parents=True, exist_ok=True)
    cache = VectorCache.open(out_dir / "embeddings.db")
    embed = BlockingEmbeddings(EmbeddingClient(embedder, cache))
    try:
        with hook_progress() as progress:
            summary = run_analysis(
                loaded,
                out_dir,
                seeds=seed_texts,
                seeds_note=note,
                options=options,
                progress=progress,
                nlp=nlp,
                embed=embed,
            )
    finally:
        embed.close()
        cache.conn.close()
    table = Table(title=f"analysis → {out_dir / 'report.html'}", title_justify="left")
    for col in (
        "dataset",
        "instructions",
        "unique pairs",
        "unique verbs",
        "entropy",
        "ROUGE-L to seeds",
        "Vendi",
        "distinct-2",
    ):
        table.add_column(col, justify="left" if col == "dataset" else "right")
    for name, s in summary["datasets"].items():
        vn, ov = s["verb_noun"], s["seed_overlap"]
        table.add_row(
            name,
            str(s["records"]),
            str(vn["unique_pairs"]),
            str(vn["unique_verbs"]),
            f"{vn['pair_entropy_norm']:.3f}",
            f"{ov['mean']:.3f}" if ov else "–",
            f"{s['diversity']['vendi_score']:.2f}",
            f"{s['diversity']['distinct_2']:.3f}",
        )
    out.print(table)
    err.print(f"done in {time.perf_counter() - started:.1f} s")


@baseline_app.command("human-curated", cls=AliasedCommand)
def human_curated(
    superni: Annotated[Path, typer.Option(help="A local Super-NaturalInstructions checkout (with tasks/*.json).")],
    out_file: Annotated[Path, typer.Option("--out", "-o", help="Output file: .jsonl for JSONL, else a JSON list.")],
    domain: Annotated[
        str,
        typer.Option(help="Paper domain whose default categories to use: rewriting, brainstorming or math."),
    ] = "rewriting",
    sample_size: Annotated[int, typer.Option(help="How many examples to sample.")] = 10000,
    categories: Annotated[
        str | None, typer.Option(help="Comma-separated SuperNI categories, replacing the domain's defaults.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 42,
    english_only: Annotated[bool, typer.Option(help="Skip tasks whose declared languages are not English.")] = True,
) -> None:
    """Sample the Domain-Specific Human-Curated baseline from a local SuperNI copy (nothing is downloaded)."""
    from explore_instruct.baselines.human_curated import categories_for, sample_superni
    from explore_instruct.cli.progress import count_progress
    from explore_instruct.datafile import format_for_path, write_records

    cats = categories_for(domain, categories.split(",") if categories is not None else None)
    with count_progress("scanning tasks") as on_progress:
        records, report = sample_superni(
            superni, cats, sample_size, seed=seed, english_only=english_only, progress=on_progress
        )
    write_records(out_file, records, format_for_path(out_file))
    out.print(
        f"{report.sampled} examples from {len(report.tasks_matched)} of {report.tasks_scanned} tasks "
        f"({report.instances_available} instances in categories: {', '.join(cats)}) → {out_file}"
    )
    if report.sampled < sample_size:
        err.print(
            f"[yellow]warning:[/] only {report.instances_available} instances available, "
            f"fewer than --sample-size {sample_size}"
        )


def register(app: typer.Typer) -> None:
    """Add this group's commands to `app`."""
    app.command("analyze", cls=AliasedCommand)(analyze)
    app.add_typer(baseline_app, name="baseline")
