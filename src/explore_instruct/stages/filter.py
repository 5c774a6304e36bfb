"""The diversity filter: drop an instruction whose ROUGE-L F1 with an already kept one is too high.

As in self-instruct, the seed instructions count as already kept (configurable). Each run replaces
the filter's earlier decisions, so it can be re-run with other settings.
"""

from __future__ import annotations

from dataclasses import dataclass

from explore_instruct.context import RunContext
from explore_instruct.rouge import FilterResult, diversity_filter
from explore_instruct.runstore import ExampleRow
from explore_instruct.stages import sample

STAGE = "filter"
SEMANTIC_STAGE = "semantic"  # the stage after this one (stages/semantic.py)


def filter_candidates(ctx: RunContext, stage: str = STAGE) -> list[ExampleRow]:
    """Examples the diversity filters judge, in their greedy order: tasks in level order, then key."""
    order = {n.id: i for i, n in enumerate(ctx.store.nodes())}
    rows = ctx.store.reached(stage)
    rows.sort(key=lambda r: (order[r.node_id], r.key))
    return rows


Drop = tuple[int, str, int | None, float | None]  # (example id, reason, dup_of id, score): `mark_dropped`'s rows


def greedy_drops(pool: list[ExampleRow], seeds: int, result: FilterResult, reason: str) -> list[Drop]:
    """The records after the first `seeds` (which count as kept) that a greedy filter (ROUGE-L or
    semantic: both return a `FilterResult`) dropped, each with the kept record it collided with."""
    drops: list[Drop] = []
    for i, row in enumerate(pool[seeds:], start=seeds):
        if not result.kept[i]:
            dup = result.dup_of[i]
            drops.append((row.id, reason, pool[dup].id if dup is not None else None, result.score[i]))
    return drops


@dataclass(frozen=True)
class DiversityResult:
    """What a diversity filter (ROUGE-L or semantic) kept of the examples it judged."""

    kept: int
    judged: int


def run(ctx: RunContext) -> DiversityResult:
    """Drop examples whose instruction's ROUGE-L F1 with a kept one exceeds the threshold.

    Dropped rows record the kept example they collided with and the score.
    """
    cfg = ctx.config.filter
    rows = filter_candidates(ctx)
    # As in self-instruct, the seed instructions count as already kept: a copy of a seed is dropped.
    seeds = ctx.store.examples(status="ok", origins=["seed"]) if cfg.against_seeds else []
    pool = seeds + rows
    drops: list[Drop] = []
    if cfg.enabled and rows:
        # The bar counts the examples judged, as the summary does; the seeds ahead of them are not counted.
        ctx.progress.start("filter", len(rows))
        seen = 0

        def advance(done: int, _total: int) -> None:
            nonlocal seen
            judged = max(0, done - len(seeds))
            ctx.progress.advance("filter", judged - seen)
            seen = judged

        result = diversity_filter(
            [r.instruction for r in pool],
            cfg.threshold,
            groups=[r.node_id for r in pool] if cfg.scope == "node" else None,
            tokenizer=cfg.tokenizer,
            stem=cfg.stem,
            progress=advance,
        )
        ctx.progress.finish("filter")
        drops = greedy_drops(pool, len(seeds), result, f"ROUGE-L > {cfg.threshold}")
    with ctx.store.transaction():
        ctx.store.mark_dropped("filter", drops)
        # The semantic filter judged what this filter kept before: its decisions are redone after it.
        ctx.store.mark_dropped(SEMANTIC_STAGE, [])
        sample.redraw(ctx)
    return DiversityResult(len(rows) - len(drops), len(rows))
