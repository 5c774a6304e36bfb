"""Decontamination in a run: drop examples that share a word n-gram with an evaluation question.

Enabled when `decontaminate.against` lists question files. It comes after the diversity filter and
before the rate stage, so no rating call is spent on a contaminated example. Each run replaces the
stage's earlier decisions; a dropped example names the question (`drop_reason`). No LLM call.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from explore_instruct.context import RunContext
from explore_instruct.decontaminate import build_index
from explore_instruct.stages import sample

STAGE = "decontaminate"


@dataclass(frozen=True)
class DecontaminateResult:
    removed: int
    judged: int


def run(ctx: RunContext) -> DecontaminateResult:
    """Drop the examples that reached the stage and share an n-gram with an evaluation question."""
    cfg = ctx.config.decontaminate
    rows = ctx.store.reached(STAGE)
    drops: list[tuple[int, str, int | None, float | None]] = []
    if cfg.against:
        index = build_index(cfg.against, cfg.ngram)
        for row in rows:
            hit = index.match((row.instruction, row.input, row.output))
            if hit is not None:
                reason = f"{cfg.ngram}-gram of evaluation question {hit.question_id} ({Path(hit.source).name})"
                drops.append((row.id, reason, None, None))
    with ctx.store.transaction():
        ctx.store.mark_dropped(STAGE, drops)
        sample.redraw(ctx)
    return DecontaminateResult(len(drops), len(rows))
