"""Sampling: draw the target number of kept examples, an even share per task, seeded."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from explore_instruct.context import RunContext
from explore_instruct.runstore import load_ratings

STAGE = "sample"


def _even_quotas(available: dict[str, int], size: int) -> dict[str, int]:
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


@dataclass(frozen=True)
class SampleResult:
    size: int  # examples drawn (fewer than sample.size when the pool is short: `shortfall` says why)


def run(ctx: RunContext) -> SampleResult:
    """Draw the sample and store it."""
    chosen = draw(ctx)
    with ctx.store.transaction():
        ctx.store.set_sample(chosen)
    return SampleResult(len(chosen))


def redraw(ctx: RunContext) -> None:
    """After a stage dropped examples: a sample drawn before may hold some of them, so draw it again."""
    if ctx.store.sample_ids():
        ctx.store.set_sample(draw(ctx))


@dataclass
class Pool:
    """What the sample draws from: kept example ids per task key (key order), the eligible tasks, the root."""

    ids: dict[str, list[int]]
    tasks: set[str]
    root: str

    def size(self) -> int:
        """Examples the sample can take: the eligible tasks', then the root's when it tops up."""
        return sum(len(self.ids.get(t, [])) for t in self.tasks | {self.root})


def pool(ctx: RunContext) -> Pool:
    """Eligible tasks are unpruned (unless `skip_pruned` is off), at depth >= 1 and <= max_depth;
    a tree with no eligible subtask (K = 0, the self-instruct baseline) samples from the root alone."""
    ctx.store.require_tree()
    cfg = ctx.config.sample
    # Tasks and examples are taken in key order, not row order: rows are numbered as replies arrive,
    # which varies between an interrupted run and an uninterrupted one.
    nodes = ctx.store.nodes()
    task_key = {n.id: n.key for n in nodes}
    root = next(n.key for n in nodes if n.parent_id is None)
    eligible = {
        n.key
        for n in nodes
        if n.parent_id is not None
        and (cfg.max_depth is None or n.depth <= cfg.max_depth)
        and not (cfg.skip_pruned and n.pruned)
    }
    by_task: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for r in ctx.store.examples(status="ok"):
        if r.origin != "seed":
            by_task[task_key[r.node_id]].append((r.key, r.id))
    ids = {task: [i for _, i in sorted(rows)] for task, rows in by_task.items()}
    return Pool(ids, eligible or {root}, root)


def draw(ctx: RunContext) -> list[int]:
    """The target number of kept examples (ids), an even share per eligible task, seeded.

    When the eligible tasks hold too few examples, the sample is topped up from the root's examples.
    """
    cfg = ctx.config.sample
    rng = random.Random(cfg.seed if cfg.seed is not None else ctx.config.seed)
    found = pool(ctx)
    ids, pool_tasks, root = found.ids, found.tasks, found.root
    quotas = _even_quotas({t: len(ids.get(t, [])) for t in sorted(pool_tasks)}, cfg.size)
    pick = _best_rated(ctx) if cfg.order == "score" else rng.sample
    chosen: list[int] = []
    for task in sorted(pool_tasks):
        chosen.extend(pick(ids.get(task, []), quotas[task]))
    if len(chosen) < cfg.size and root not in pool_tasks:
        spare = ids.get(root, [])
        chosen.extend(pick(spare, min(len(spare), cfg.size - len(chosen))))
    rng.shuffle(chosen)
    return chosen


def _best_rated(ctx: RunContext) -> Callable[[list[int], int], list[int]]:
    """`sample.order: score`: the k best-rated of a task's ids (given in key order, which breaks ties).

    An example without a rating counts as scoring 0, so it comes after every rated one.
    """
    ratings = load_ratings(ctx.store.conn)
    score = {r.id: ratings[r.key].score for r in ctx.store.examples(status="ok") if r.key in ratings}

    def pick(ids: list[int], k: int) -> list[int]:
        ranked = sorted(range(len(ids)), key=lambda i: (-score.get(ids[i], 0), i))
        return [ids[i] for i in ranked[:k]]

    return pick


def shortfall(ctx: RunContext) -> str | None:
    """One line when the stored sample is smaller than `sample.size`: how many, why, and what to change."""
    asked, drawn = ctx.config.sample.size, len(ctx.store.sample_ids())
    if drawn >= asked:
        return None
    found = pool(ctx)
    kept = sum(len(v) for v in found.ids.values())
    elsewhere = kept - found.size()
    outside = f"; {elsewhere} more are kept in pruned tasks or below sample.max_depth" if elsewhere else ""
    rated = ctx.config.rate.enabled
    return (
        f"warning: sampled {drawn} of the {asked} asked for (sample.size): after the quality checks, exact "
        f"duplicates, the diversity filter{', decontamination' if ctx.config.decontaminate.against else ''}"
        f"{' and the rating' if rated else ''} the pool held {found.size()} examples{outside}. For more, raise "
        f"generate.examples_per_task or explore.breadth, raise filter.threshold, "
        f"{'lower rate.threshold, ' if rated else ''}or lower sample.size."
    )
