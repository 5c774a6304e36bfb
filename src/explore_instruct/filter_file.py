"""The ROUGE-L diversity filter on any JSON/JSONL record file, outside a run (`filter-file` in the CLI).

Keeps a record only if its ROUGE-L F1 with every record kept before it is at most the threshold; writes
the kept records in input order and, on request, the dropped ones with what they collided with.
With `semantic` set, the records the ROUGE-L filter kept then pass the semantic near-duplicate filter
(`semantic.py`): cosine similarity of their embeddings above `semantic` drops the later one.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from explore_instruct.datafile import format_for_path, read_records, text_field, write_records
from explore_instruct.errors import UserError
from explore_instruct.llm.embed_client import EmbeddingClient
from explore_instruct.llm.embeddings import Embedder, build_embedder
from explore_instruct.rouge import TOKENIZERS, FilterResult, diversity_filter
from explore_instruct.runstore import VectorCache
from explore_instruct.semantic import semantic_filter


@dataclass(frozen=True)
class FilterFileOptions:
    threshold: float = 0.7
    field: str = "instruction"
    group_field: str | None = None
    tokenizer: str = "rouge"
    stem: bool = False
    workers: int | None = None
    semantic: float | None = None  # the cosine threshold of the semantic filter; None: not run

    def check(self) -> None:
        """Bad options are one clear line each, before any file is read."""
        if not 0.0 <= self.threshold <= 1.0:  # NaN fails this too
            raise UserError(f"threshold must be between 0 and 1, not {self.threshold}", settings=("threshold",))
        if self.semantic is not None and not -1.0 <= self.semantic <= 1.0:
            raise UserError(
                f"semantic must be a cosine similarity between -1 and 1, not {self.semantic}", settings=("semantic",)
            )
        if self.tokenizer not in TOKENIZERS:
            raise UserError(
                f"tokenizer must be one of {', '.join(TOKENIZERS)}, not {self.tokenizer!r}", settings=("tokenizer",)
            )
        if self.workers is not None and self.workers < 1:
            raise UserError("workers must be at least 1", settings=("workers",))


@dataclass(frozen=True)
class FilterFileResult:
    total: int
    kept: int
    out: Path


def texts_and_groups(
    path: Path, records: list[dict[str, Any]], field: str, group_field: str | None
) -> tuple[list[str], list[str] | None]:
    """The compared text of every record and, with `group_field`, its group key (JSON of the value)."""
    texts: list[str] = []
    groups: list[str] | None = [] if group_field else None
    for i, rec in enumerate(records):
        texts.append(text_field(rec, field, f"{path}: record {i}"))
        if groups is not None and group_field is not None:
            if group_field not in rec:
                raise UserError(f"{path}: record {i} has no group field {group_field!r}")
            # Any JSON value names a group; equal values (as JSON) are the same group.
            groups.append(json.dumps(rec[group_field], sort_keys=True, ensure_ascii=False))
    return texts, groups


def filter_file(
    input_path: Path,
    out: Path,
    options: FilterFileOptions = FilterFileOptions(),
    *,
    explain: Path | None = None,
    progress: Callable[[int, int], None] | None = None,
    embedder: Embedder | None = None,
) -> FilterFileResult:
    """Filter `input_path` into `out` (format from its suffix, else the input's); see the module doc.

    `explain`, when given, receives the dropped records as JSONL: index, dup_of (the kept record with the
    highest score), score, both texts, and the group value when grouping; with the semantic filter,
    also `filter` (rouge or semantic). `embedder` gives the semantic filter's vectors (default: local).
    """
    options.check()
    records, input_format = read_records(input_path)
    texts, groups = texts_and_groups(input_path, records, options.field, options.group_field)
    if progress is not None:
        progress(0, len(texts))
    result = diversity_filter(
        texts,
        options.threshold,
        groups=groups,
        tokenizer=options.tokenizer,  # type: ignore[arg-type]
        stem=options.stem,
        workers=options.workers,
        progress=progress,
    )
    stages: list[str] | None = None
    if options.semantic is not None:
        stages = ["rouge" if not k else "" for k in result.kept]
        _semantic_pass(texts, groups, result, stages, options.semantic, embedder or build_embedder("local"))
    kept = [r for r, k in zip(records, result.kept, strict=True) if k]
    # A .json/.jsonl name decides the output format; any other name keeps the input's.
    write_records(out, kept, format_for_path(out, default=input_format))
    if explain is not None:
        write_records(explain, _dropped(records, texts, result, options.group_field, stages), "jsonl")
    return FilterFileResult(total=len(texts), kept=result.n_kept, out=out)


def _semantic_pass(
    texts: list[str],
    groups: list[str] | None,
    result: FilterResult,
    stages: list[str],
    threshold: float,
    embedder: Embedder,
) -> None:
    """Run the semantic filter over the records `result` kept and fold its drops into `result`."""
    survivors = result.kept_indices
    client = EmbeddingClient(embedder, VectorCache.in_memory())

    async def embed() -> Any:
        try:
            return await client.embed([texts[i] for i in survivors])
        finally:
            await client.aclose()

    vectors = asyncio.run(embed())
    found = semantic_filter(vectors, threshold, groups=[groups[i] for i in survivors] if groups else None)
    for j, i in enumerate(survivors):
        if not found.kept[j]:
            dup = found.dup_of[j]
            result.kept[i], result.score[i], stages[i] = False, found.score[j], "semantic"
            result.dup_of[i] = survivors[dup] if dup is not None else None


def _dropped(
    records: list[dict[str, Any]], texts: list[str], result: Any, group_field: str | None, stages: list[str] | None
) -> list[dict[str, Any]]:
    return [
        {
            "index": i,
            **({"filter": stages[i]} if stages is not None else {}),
            "dup_of": result.dup_of[i],
            "score": result.score[i],
            "text": texts[i],
            "dup_text": texts[d] if (d := result.dup_of[i]) is not None else None,
            **({"group": records[i][group_field]} if group_field else {}),
        }
        for i, k in enumerate(result.kept)
        if not k
    ]
