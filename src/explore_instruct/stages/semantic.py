"""The semantic near-duplicate filter, right after the ROUGE-L filter (`filter.semantic`, off by default).

It judges the instructions the ROUGE-L filter kept, in the same tree order, on the cosine similarity
of their embeddings (`semantic.py`); the seed instructions count as already kept when
`filter.against_seeds` is on. Vectors come from `EmbeddingClient`, cached in the run, so a rerun
sends no request. Each run replaces the stage's earlier decisions; the ROUGE-L filter undoes them
(they depend on what it kept), so a full run or `filter` followed by `semantic` redoes both.
"""

from __future__ import annotations

from explore_instruct.context import RunContext
from explore_instruct.semantic import semantic_filter
from explore_instruct.stages import sample
from explore_instruct.stages.filter import DiversityResult, Drop, filter_candidates, greedy_drops

STAGE = "semantic"


async def run(ctx: RunContext) -> DiversityResult:
    """Drop instructions whose embedding's cosine similarity with a kept one exceeds the threshold.

    Dropped rows record the kept example they collided with and the similarity.
    """
    cfg = ctx.config.filter.semantic
    rows = filter_candidates(ctx, STAGE)
    drops: list[Drop] = []
    if cfg.enabled and rows:
        seeds = ctx.store.examples(status="ok", origins=["seed"]) if ctx.config.filter.against_seeds else []
        pool = seeds + rows
        client = ctx.embedding_client()
        ctx.progress.start("embed", len(pool))
        try:
            vectors = await client.embed(
                [r.instruction for r in pool], progress=lambda n: ctx.progress.advance("embed", n)
            )
        finally:
            ctx.progress.finish("embed")
            await ctx.close_embedder()
        ctx.progress.start(STAGE, len(pool))
        result = semantic_filter(
            vectors,
            cfg.threshold,
            groups=[r.node_id for r in pool] if cfg.scope == "node" else None,
            search=cfg.search,
            progress=lambda n: ctx.progress.advance(STAGE, n),
        )
        ctx.progress.finish(STAGE)
        drops = greedy_drops(pool, len(seeds), result, f"cosine > {cfg.threshold}")
    with ctx.store.transaction():
        ctx.store.mark_dropped(STAGE, drops)
        sample.redraw(ctx)
    return DiversityResult(len(rows) - len(drops), len(rows))
