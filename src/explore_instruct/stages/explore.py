"""Exploration: lookahead + backtracking depth-first search over the task tree.

A node gets rounds of up to M new subtasks until it has B[depth] children. The first round is a
lookahead (decompose the task); later rounds backtrack to it with its existing children listed, so
the new ones must differ (breadth). A node's rounds run one after another because each must see the
children found so far; once a node is complete, its children are explored concurrently, each
seeing its full list of siblings. Prompts depend only on the tree's state and the run's seed, so a
resumed run replays the same requests, finds them in the cache and rebuilds the same tree. The
examples new subtasks come with are stored when the stage ends, in tree order, so their row ids (the
exports' `id`) do not follow the order replies arrived in.
"""

from __future__ import annotations

import asyncio
import math
import random
from dataclasses import dataclass, field

from explore_instruct.config import per_depth
from explore_instruct.context import RunContext
from explore_instruct.llm.base import CompletionRequest
from explore_instruct.parse import Subtask, parse_subtasks, subtasks_schema
from explore_instruct.prompting import PromptBuilder
from explore_instruct.quality import PromptText, drop_reason, task_name_drop_reason
from explore_instruct.runstore import NewExample
from explore_instruct.start import LiveNode, insert_start
from explore_instruct.tree import Example

STAGE = "explore"


@dataclass
class FoundExamples:
    """The examples each new subtask came with, per node key, held until the stage stores them."""

    by_node: dict[str, dict[str, NewExample]] = field(default_factory=dict)

    def add(self, node: LiveNode, key: str, example: Example, reason: str | None, call_id: int) -> None:
        self.by_node.setdefault(node.key, {})[key] = NewExample(key, node.id, "explore", example, call_id, reason)

    def store(self, ctx: RunContext, root: LiveNode) -> int:
        """Store them in tree order, then reply order; returns how many stored verdicts the current
        quality rules changed (a replay under the same rules inserts and changes nothing)."""
        with ctx.store.transaction():
            return ctx.store.add_examples(
                new for node in root.walk() for new in self.by_node.get(node.key, {}).values()
            )


def expected_nodes(max_depth: int, breadth: list[int]) -> int:
    """How many nodes a complete exploration adds (the progress bar's total)."""
    total, level = 0, 1
    for depth in range(max_depth):
        level *= per_depth(breadth, depth)
        total += level
    return total


def build_request(prompts: PromptBuilder, node: LiveNode, want: int, round_no: int) -> CompletionRequest:
    """The lookahead (round 0) or backtracking request for `node`: a function of the tree and the config."""
    cfg = prompts.config
    seed = prompts.stable_seed(STAGE, node.key, round_no)
    rng = random.Random(seed)
    demos = rng.sample(node.examples, min(cfg.explore.demonstrations, len(node.examples)))
    return prompts.request(
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


def _names_shown(node: LiveNode) -> list[str]:
    """Task names the explore prompt shows: the path, the peers and the existing children."""
    return [*node.path(), *(p.name for p in node.peers()), *(c.name for c in node.children)]


def _dropped_key(node: LiveNode, round_no: int, index: int) -> str:
    """Where a rejected name stands: the same on every replay, and no child position is used up."""
    return f"{node.key}@{round_no}#{index}"


async def _explore_round(ctx: RunContext, node: LiveNode, want: int, round_no: int, found: FoundExamples) -> int:
    """One lookahead/backtracking round; returns how many new children it added.

    A proposed name that fails the profile's name rules (or repeats a task) is recorded as dropped
    and takes no position, so it does not count toward the breadth and the next round asks again.
    """
    client = ctx.require_client()
    added: list[LiveNode] = []
    request = build_request(ctx.prompts, node, want, round_no)
    prompt = PromptText.of(request, node.examples, _names_shown(node))

    def commit(subtasks: list[Subtask], call_id: int) -> None:
        added.clear()  # a replayed commit recomputes the same children
        existing = [p.name for p in node.peers()] + [c.name for c in node.children]
        for index, sub in enumerate(subtasks):
            if len(added) >= want:
                break
            name_drop = task_name_drop_reason(
                sub.name,
                ctx.profile,
                path=node.path(),
                existing=existing,
                instructions=[ex.instruction for ex in (*sub.examples, *node.examples)],
            )
            if name_drop is not None:
                ctx.store.add_dropped_task(
                    key=_dropped_key(node, round_no, index),
                    parent_id=node.id,
                    name=sub.name,
                    reason=name_drop,
                    call_id=call_id,
                )
                continue
            existing.append(sub.name)
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
                reason = drop_reason(ex, ctx.profile, prompt)
                found.add(child, f"{key}#x{i}", ex, reason, call_id)
                if reason is None:
                    child.examples.append(ex)
            added.append(child)

    result = await client.call(
        request,
        stage=STAGE,
        parse=lambda c: parse_subtasks(c.text),
        commit=commit,
    )
    if result.failed:
        return 0
    node.children.extend(added)
    ctx.progress.advance(STAGE, len(added))
    return len(added)


async def _visit(ctx: RunContext, node: LiveNode, found: FoundExamples) -> None:
    cfg = ctx.config.explore
    if node.depth >= cfg.max_depth:
        return
    target = per_depth(cfg.breadth, node.depth)
    fruitless, round_no = 0, 0
    max_rounds = math.ceil(target / cfg.new_per_call) + cfg.max_fruitless_rounds
    while len(node.children) < target and fruitless < cfg.max_fruitless_rounds and round_no < max_rounds:
        want = min(cfg.new_per_call, target - len(node.children))
        if await _explore_round(ctx, node, want, round_no, found) == 0:
            fruitless += 1
        round_no += 1
    await asyncio.gather(*(_visit(ctx, child, found) for child in node.children))


@dataclass(frozen=True)
class ExploreResult:
    """The grown tree (its live root), how many tasks it holds below the root, and how many stored
    quality verdicts of the subtasks' examples the current rules changed."""

    root: LiveNode
    tasks: int
    verdicts_changed: int


async def run(ctx: RunContext) -> ExploreResult:
    """Grow the tree from the starting tree to max depth K."""
    root = insert_start(ctx.store, ctx.config)
    cfg = ctx.config.explore
    ctx.progress.start(STAGE, expected_nodes(cfg.max_depth, cfg.breadth))
    # Nodes a seed tree already has count toward their parent's breadth.
    ctx.progress.advance(STAGE, len(root.walk()) - 1)
    found = FoundExamples()
    try:
        await _visit(ctx, root, found)
    finally:  # a stopped stage stores what it got, so its exports show it
        changed = found.store(ctx, root)
    ctx.progress.finish(STAGE)
    return ExploreResult(root, len(root.walk()) - 1, changed)
