"""Exploration: lookahead + backtracking depth-first search over the task tree.

A node gets rounds of up to M new subtasks until it has B[depth] children. The first round is a
lookahead (decompose the task); later rounds backtrack to it with its existing children listed, so
the new ones must differ (breadth). A node's rounds run one after another because each must see the
children found so far; once a node is complete, its children are explored concurrently, each
seeing its full list of siblings. Prompts depend only on the tree's state and the run's seed, so a
resumed run replays the same requests, finds them in the cache and rebuilds the same tree.
"""

from __future__ import annotations

import asyncio
import math
import random

from explore_instruct.config import per_depth
from explore_instruct.context import RunContext
from explore_instruct.llm.base import CompletionRequest
from explore_instruct.parse import Subtask, parse_subtasks, subtasks_schema
from explore_instruct.quality import drop_reason
from explore_instruct.start import LiveNode, insert_start
from explore_instruct.tree import normalise_task_name

STAGE = "explore"


def expected_nodes(max_depth: int, breadth: list[int]) -> int:
    """How many nodes a complete exploration adds (the progress bar's total)."""
    total, level = 0, 1
    for depth in range(max_depth):
        level *= per_depth(breadth, depth)
        total += level
    return total


def _taken_names(node: LiveNode) -> set[str]:
    """Names a new child of `node` must not repeat: the node, its ancestors, peers and children."""
    names = {normalise_task_name(n) for n in node.path()}
    names.update(normalise_task_name(p.name) for p in node.peers())
    names.update(normalise_task_name(c.name) for c in node.children)
    return names


def build_request(ctx: RunContext, node: LiveNode, want: int, round_no: int) -> CompletionRequest:
    cfg = ctx.config
    seed = ctx.stable_seed(STAGE, node.key, round_no)
    rng = random.Random(seed)
    demos = rng.sample(node.examples, min(cfg.explore.demonstrations, len(node.examples)))
    return ctx.prompt_request(
        "explore.txt",
        seed=seed,
        json_schema=subtasks_schema(want, cfg.explore.examples_per_subtask),
        schema_name="subtasks",
        path=node.path(),
        task=node,
        demonstrations=demos,
        peers=[p.name for p in node.peers()],
        existing=[c.name for c in node.children],
        want=want,
        examples_per=cfg.explore.examples_per_subtask,
    )


async def _explore_round(ctx: RunContext, node: LiveNode, want: int, round_no: int) -> int:
    """One lookahead/backtracking round; returns how many new children it added."""
    client = ctx.require_client()
    added: list[LiveNode] = []

    def commit(subtasks: list[Subtask], call_id: int) -> None:
        added.clear()  # a replayed commit recomputes the same children
        taken = _taken_names(node)
        for sub in subtasks:
            norm = normalise_task_name(sub.name)
            if not norm or norm in taken or len(added) >= want:
                continue
            taken.add(norm)
            position = len(node.children) + len(added)
            key = f"{node.key}/{position}"
            child_id = ctx.store.add_node(
                key=key,
                parent_id=node.id,
                position=position,
                depth=node.depth + 1,
                name=sub.name,
                reason=sub.reason,
                call_id=call_id,
            )
            child = LiveNode(child_id, key, sub.name, sub.reason, node.depth + 1, node)
            for i, ex in enumerate(sub.examples):
                reason = drop_reason(ex, ctx.profile)
                ctx.store.add_example(
                    key=f"{key}#x{i}",
                    node_id=child_id,
                    origin="explore",
                    example=ex,
                    call_id=call_id,
                    drop_reason=reason,
                )
                if reason is None:
                    child.examples.append(ex)
            added.append(child)

    result = await client.call(
        build_request(ctx, node, want, round_no),
        stage=STAGE,
        parse=lambda c: parse_subtasks(c.text),
        commit=commit,
    )
    if result.failed:
        return 0
    node.children.extend(added)
    ctx.progress.advance(STAGE, len(added))
    return len(added)


async def _visit(ctx: RunContext, node: LiveNode) -> None:
    cfg = ctx.config.explore
    if node.depth >= cfg.max_depth:
        return
    target = per_depth(cfg.breadth, node.depth)
    fruitless, round_no = 0, 0
    max_rounds = math.ceil(target / cfg.new_per_call) + cfg.max_fruitless_rounds
    while len(node.children) < target and fruitless < cfg.max_fruitless_rounds and round_no < max_rounds:
        want = min(cfg.new_per_call, target - len(node.children))
        if await _explore_round(ctx, node, want, round_no) == 0:
            fruitless += 1
        round_no += 1
    await asyncio.gather(*(_visit(ctx, child) for child in node.children))


async def run(ctx: RunContext) -> LiveNode:
    """Grow the tree from the starting tree to max depth K; returns the live root."""
    root = insert_start(ctx.store, ctx.config)
    cfg = ctx.config.explore
    ctx.progress.start(STAGE, expected_nodes(cfg.max_depth, cfg.breadth))
    # Nodes a seed tree already has count toward their parent's breadth.
    ctx.progress.advance(STAGE, len(root.walk()) - 1)
    await _visit(ctx, root)
    ctx.progress.finish(STAGE)
    return root
