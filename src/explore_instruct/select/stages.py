"""Selection stages over the run store: task pruning, the diversity filter, sampling.

Each stage replaces its own earlier decisions, so it can be re-run with other settings.
"""

from __future__ import annotations

import random
from collections import defaultdict

from explore_instruct.context import RunContext
from explore_instruct.select.rouge import diversity_filter, prune_names
from explore_instruct.store import ExampleRow


def prune(ctx: RunContext) -> int:
    """Mark a task pruned when its name's ROUGE-L with an earlier task (level order) is too high."""
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
    return len(decisions)


def filter_candidates(ctx: RunContext) -> list[ExampleRow]:
    """Examples the diversity filter judges, in its greedy order: tasks in level order, then key."""
    order = {n.id: i for i, n in enumerate(ctx.store.nodes())}
    rows = [
        r
        for r in ctx.store.examples(status="ok") + ctx.store.examples(status="dropped")
        if r.origin != "seed" and (r.status == "ok" or r.drop_stage == "filter")
    ]
    rows.sort(key=lambda r: (order[r.node_id], r.key))
    return rows


def diversity(ctx: RunContext) -> tuple[int, int]:
    """Drop examples whose instruction's ROUGE-L F1 with a kept one exceeds the threshold.

    Returns (kept, total). Dropped rows record the kept example they collided with and the score.
    """
    cfg = ctx.config.filter
    rows = filter_candidates(ctx)
    # As in self-instruct, the seed instructions count as already kept: a copy of a seed is dropped.
    seeds = ctx.store.examples(status="ok", origins=["seed"]) if cfg.against_seeds else []
    pool = seeds + rows
    drops: list[tuple[int, str, int | None, float | None]] = []
    if cfg.enabled and rows:
        ctx.progress.start("filter", len(pool))
        seen = 0

        def advance(done: int, _total: int) -> None:
            nonlocal seen
            ctx.progress.advance("filter", done - seen)
            seen = done

        result = diversity_filter(
            [r.instruction for r in pool],
            cfg.threshold,
            groups=[r.node_id for r in pool] if cfg.scope == "node" else None,
            tokenizer=cfg.tokenizer,
            stem=cfg.stem,
            progress=advance,
        )
        ctx.progress.finish("filter")
        for i, row in enumerate(pool[len(seeds) :], start=len(seeds)):
            if not result.kept[i]:
                dup = result.dup_of[i]
                drops.append(
                    (row.id, f"ROUGE-L > {cfg.threshold}", pool[dup].id if dup is not None else None, result.score[i])
                )
    with ctx.store.transaction():
        ctx.store.mark_dropped("filter", drops)
    return len(rows) - len(drops), len(rows)


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


def sample(ctx: RunContext) -> int:
    """Draw the target number of kept examples, an even share per eligible task, seeded.

    Eligible tasks are unpruned (unless `skip_pruned` is off), at depth >= 1 and <= max_depth;
    when they hold too few examples, the sample is topped up from the root's examples. A tree
    with no eligible subtask (K = 0, the self-instruct baseline) samples from the root alone.
    """
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
