"""Task pruning: a task whose name is too close (ROUGE-L) to an earlier task's, in level order, is pruned.

Pruning needs only task names, so a full run prunes before enrichment and no call is spent on a
task that will be pruned. Each run replaces the earlier decisions, so it can be re-run with other settings.
"""

from __future__ import annotations

from dataclasses import dataclass

from explore_instruct.context import RunContext
from explore_instruct.rouge import prune_names
from explore_instruct.start import insert_start

STAGE = "prune"


@dataclass(frozen=True)
class PruneResult:
    pruned: int  # tasks marked pruned


def run(ctx: RunContext) -> PruneResult:
    """Mark a task pruned when its name's ROUGE-L with an earlier task (level order) is too high."""
    insert_start(ctx.store, ctx.config)  # pruning may run before exploration ever did
    cfg = ctx.config.prune
    nodes = ctx.store.nodes()  # level order
    decisions: list[tuple[int, int | None, float | None]] = []
    if cfg.enabled and nodes:
        result = prune_names([n.name for n in nodes], cfg.threshold)
        for i, node in enumerate(nodes):
            dup = result.dup_of[i]
            # The root is never pruned: it is where the data comes from.
            if node.parent_id is not None and dup is not None:
                decisions.append((node.id, nodes[dup].id, result.score[i]))
    with ctx.store.transaction():
        ctx.store.set_pruned(decisions)
    return PruneResult(len(decisions))
