"""Enrichment: N[depth] instruction-input-output examples for every task in the tree.

Each call asks for about `per_call` examples, showing the parent task, the task and its reason,
and demonstrations sampled from the parent's examples (the root uses its own). A task that falls
short after its first batch gets top-up calls, up to `max_extra_calls`. With `bootstrap` (the
self-instruct baseline) demonstrations come from the task's growing pool instead, batch by batch.
With `llm.batch` enabled, the calls of a round (every task's first calls, then every task's top-ups)
go through the batch transport (`llm/batch.py`) as one provider batch, under the same client rules.

Every request is a function of the tree and the run's seed, and each example's key names the call
and position it came from, so the outcome does not depend on the order replies arrive in. Replies
are kept in memory while the stage runs and stored when it ends, in tree order and then key order:
row ids (the exports' `id`) do not follow arrival order either. A killed stage loses nothing, since
every reply is in the call log and a resume replays it from there.
"""

from __future__ import annotations

import asyncio
import math
import random
from dataclasses import dataclass, field

from explore_instruct.config import per_depth
from explore_instruct.context import RunContext
from explore_instruct.llm.base import Completion, CompletionRequest
from explore_instruct.llm.batch import BatchTransport
from explore_instruct.llm.client import Transport
from explore_instruct.parse import examples_schema, parse_examples
from explore_instruct.prompting import PromptBuilder
from explore_instruct.quality import PromptText, drop_reason, exact_key
from explore_instruct.runstore import NewExample
from explore_instruct.stages import sample
from explore_instruct.start import LiveNode, insert_start, load_live_tree
from explore_instruct.tree import Example

STAGE = "generate"


@dataclass
class NodeWork:
    """One task's enrichment state: examples per key (key order = call, then position)."""

    node: LiveNode
    target: int
    results: dict[str, NewExample] = field(default_factory=dict)
    calls_made: int = 0

    def kept(self) -> list[Example]:
        """Examples that pass quality and are not exact duplicates, in key order."""
        seen = {exact_key(e) for e in self.node.examples}
        out = []
        for key in sorted(self.results):
            ex, reason = self.results[key].example, self.results[key].drop_reason
            if reason is None and exact_key(ex) not in seen:
                seen.add(exact_key(ex))
                out.append(ex)
        return out


def example_key(node_key: str, call_index: int, position: int) -> str:
    return f"{node_key}#g{call_index:05d}.{position:03d}"


def build_request(
    prompts: PromptBuilder, work: NodeWork, call_index: int, count: int, pool: list[Example]
) -> CompletionRequest:
    """Enrichment call `call_index` of a task: a function of the tree, the pool and the config."""
    node = work.node
    seed = prompts.stable_seed(STAGE, node.key, call_index)
    rng = random.Random(seed)
    demos = rng.sample(pool, min(prompts.config.generate.demonstrations, len(pool)))
    return prompts.request(
        "generate.txt",
        seed=seed,
        json_schema=examples_schema(count),
        schema_name="examples",
        parent=node.parent.name if node.parent else None,
        task=node,
        demonstrations=demos,
        count=count,
    )


def demonstration_pool(work: NodeWork, bootstrap: bool) -> list[Example]:
    node = work.node
    if bootstrap:
        return node.examples + work.kept()
    source = node.parent if node.parent is not None else node
    return source.examples or node.examples


def parse_reply(completion: Completion) -> list[Example]:
    return parse_examples(completion.text)


async def _call(
    ctx: RunContext,
    work: NodeWork,
    call_index: int,
    request: CompletionRequest,
    pool: list[Example],
    transport: Transport | None,
) -> None:
    node = work.node
    prompt = PromptText.of(request, pool, node.path())

    def commit(examples: list[Example], call_id: int) -> None:
        for i, ex in enumerate(examples):
            key = example_key(node.key, call_index, i)
            work.results[key] = NewExample(key, node.id, "generate", ex, call_id, drop_reason(ex, ctx.profile, prompt))

    await ctx.require_client().call(
        request,
        stage=STAGE,
        parse=parse_reply,
        commit=commit,
        transport=transport,
    )
    ctx.progress.advance(STAGE)


async def _enrich(ctx: RunContext, work: NodeWork, rounds: BatchTransport | None) -> None:
    try:
        await _enrich_rounds(ctx, work, rounds)
    finally:
        if rounds is not None:
            rounds.leave()


async def _enrich_rounds(ctx: RunContext, work: NodeWork, rounds: BatchTransport | None) -> None:
    cfg = ctx.config.generate
    per_call = cfg.per_call
    batch_limit = ctx.config.llm.max_concurrency if cfg.bootstrap else None
    first_batch_calls = math.ceil(work.target / per_call)
    extra_used = 0
    while True:
        missing = work.target - len(work.kept())
        if missing <= 0:
            return
        topping_up = work.calls_made >= first_batch_calls
        if topping_up:
            if extra_used >= cfg.max_extra_calls:
                return
            calls = min(math.ceil(missing / per_call), cfg.max_extra_calls - extra_used)
        else:
            calls = first_batch_calls - work.calls_made
        if batch_limit:
            calls = min(calls, batch_limit)
        if topping_up:
            extra_used += calls
            ctx.progress.advance(STAGE, 0, total=calls)
        pool = demonstration_pool(work, cfg.bootstrap)
        # Split what is missing over the batch's calls: per_call each, the remainder in the last.
        counts = [per_call] * calls
        counts[-1] = max(1, min(per_call, missing - per_call * (calls - 1)))
        start = work.calls_made
        work.calls_made += calls
        requests = [build_request(ctx.prompts, work, start + i, count, pool) for i, count in enumerate(counts)]
        transport = None
        if rounds is not None and (not topping_up or ctx.config.llm.batch.top_ups == "batch"):
            await rounds.round(requests)  # batch mode: the calls go out with every other task's of this round
            transport = rounds
        await asyncio.gather(
            *(_call(ctx, work, start + i, request, pool, transport) for i, request in enumerate(requests))
        )


@dataclass(frozen=True)
class GenerateResult:
    """Examples kept per task key; on a resume, how many stored quality verdicts the current rules
    changed; and how many examples were exact duplicates."""

    kept: dict[str, int]
    verdicts_changed: int
    duplicates: int


async def run(ctx: RunContext) -> GenerateResult:
    """Enrich every (unpruned) task.

    Every reply's records are judged by the current quality rules as they arrive (a resume replays
    the logged replies), and that one verdict decides the top-up calls and is what gets stored: a
    rule changed since the records were first stored updates them (`RunStore.add_examples`).
    """
    insert_start(ctx.store, ctx.config)
    root = load_live_tree(ctx.store)
    pruned = {row.id for row in ctx.store.nodes() if row.pruned}
    cfg = ctx.config.generate
    works = [
        NodeWork(node, per_depth(cfg.examples_per_task, node.depth)) for node in root.walk() if node.id not in pruned
    ]
    ctx.progress.start(STAGE, sum(math.ceil(w.target / cfg.per_call) for w in works))
    try:
        if not ctx.config.llm.batch.enabled:
            await asyncio.gather(*(_enrich(ctx, w, None) for w in works))
        else:
            rounds = BatchTransport(ctx.store, ctx.require_client(), ctx.config.llm, stage=STAGE, workers=len(works))
            try:
                await asyncio.gather(*(_enrich(ctx, w, rounds) for w in works))
            finally:
                await rounds.aclose()
    finally:  # a stopped stage stores what it got, so its exports show it
        add_earlier_records(ctx, works)
        changed = store_results(ctx, works)
    duplicates = mark_exact_duplicates(ctx)
    ctx.progress.finish(STAGE)
    return GenerateResult({w.node.key: len(w.kept()) for w in works}, changed, duplicates)


def add_earlier_records(ctx: RunContext, works: list[NodeWork]) -> None:
    """Stored records of calls this session did not make, judged by the current rules too.

    They come from calls an earlier session made under other rules or settings (top-ups a looser rule
    no longer needs): paid for and in the call log, so they stay, judged like every other record
    against the prompt they answered. A replay under unchanged rules leaves none.
    """
    by_node = {w.node.id: w for w in works}
    for row in ctx.store.examples(origins=["generate"]):
        work = by_node.get(row.node_id)
        if work is None or row.key in work.results or row.call_id is None:
            continue
        ex = Example(row.instruction, row.input, row.output)
        pool = demonstration_pool(work, ctx.config.generate.bootstrap)
        prompt = PromptText.of(CompletionRequest(ctx.store.call_messages(row.call_id)), pool, work.node.path())
        work.results[row.key] = NewExample(
            row.key, row.node_id, "generate", ex, row.call_id, drop_reason(ex, ctx.profile, prompt)
        )


def store_results(ctx: RunContext, works: list[NodeWork]) -> int:
    """Store every reply's examples in tree order, then key order; returns how many stored verdicts
    changed (a replay under the same rules inserts and changes nothing)."""
    with ctx.store.transaction():
        changed = ctx.store.add_examples(w.results[key] for w in works for key in sorted(w.results))  # level order
        if changed:  # a sample drawn before may hold an example the current rules drop
            sample.redraw(ctx)
    return changed


def mark_exact_duplicates(ctx: RunContext) -> int:
    """Drop generated examples that repeat an earlier example of the same task exactly.

    Every example that passed quality takes part, those the diversity filter dropped since too: a
    re-run after the filter then makes the decisions the first run made.
    """
    store = ctx.store
    rows = [r for r in store.examples() if r.drop_stage != "quality"]
    rows.sort(key=lambda r: (r.node_id, r.origin == "generate", r.key))
    seen: dict[tuple[int, tuple[str, str]], int] = {}
    drops = []
    for r in rows:
        k = (r.node_id, exact_key(Example(r.instruction, r.input, r.output)))
        if k in seen:
            drops.append((r.id, "exact duplicate", seen[k], 1.0))
        else:
            seen[k] = r.id
    with store.transaction():
        store.mark_dropped("duplicate", drops)
    return len(drops)
