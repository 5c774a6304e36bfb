"""Sampling: draw the target number of kept examples, an even share per task, seeded."""

from __future__ import annotations

import random
from collections import defaultdict

from explore_instruct.context import RunContext

STAGE = "sample"


def _even_quotas(available: dict[int, int], size: int) -> dict[int, int]:
    """Split `size` evenly over tasks, capped by what each has; spare quota flows to the others."""
    quotas = dict.fromkeys(available, 0)
    remaining = size
    open_tasks = sorted(t for t, n in available.items() if n > 0)
    while remaining > 0 and open_tasks:
        share, extra = divmod(remaining, len(open_tasks))
        for i, task in enumerate(open_tasks):
            quotas[task] += min(share + (1 if i < extra else 0), available[task] - quotas[task])
        remaining = size - sum(quotas.values())
        open_tasks = [t for t in open_tasks if quotas[t] < available[t]]
        if share == 0 and extra == 0:
            break
    return quotas


def run(ctx: RunContext) -> int:
    """Draw the target number of kept examples, an even share per eligible task, seeded.

    Eligible tasks are unpruned (unless `skip_pruned` is off), at depth >= 1 and <= max_depth;
    when they hold too few examples, the sample is topped up from the root's examples. A tree
    with no eligible subtask (K = 0, the self-instruct baseline) samples from the root alone.
    """
    ctx.store.require_tree()
    cfg = ctx.config.sample
    seed = cfg.seed if cfg.seed is not None else ctx.config.seed
    rng = random.Random(seed)
    nodes = ctx.store.nodes()
    root_id = next(n.id for n in nodes if n.parent_id is None)
    eligible = {
        n.id
        for n in nodes
        if n.parent_id is not None
        and (cfg.max_depth is None or n.depth <= cfg.max_depth)
        and not (cfg.skip_pruned and n.pruned)
    }
    by_task: dict[int, list[int]] = defaultdict(list)
    for r in ctx.store.examples(status="ok"):
        if r.origin != "seed":
            by_task[r.node_id].append(r.id)
    pool_tasks = eligible or {root_id}
    quotas = _even_quotas({t: len(by_task[t]) for t in sorted(pool_tasks)}, cfg.size)
    chosen: list[int] = []
    for task in sorted(pool_tasks):
        chosen.extend(rng.sample(by_task[task], quotas[task]))
    if len(chosen) < cfg.size and root_id not in pool_tasks:
        spare = by_task[root_id]
        chosen.extend(rng.sample(spare, min(len(spare), cfg.size - len(chosen))))
    rng.shuffle(chosen)
    with ctx.store.transaction():
        ctx.store.set_sample(chosen)
    return len(chosen)
