"""The cost of a run before it starts (`run --dry-run`), and the estimate kept beside what was spent.

Calls follow from the config: exploration asks each node for M subtasks a round until it has B[depth]
children, so a node at depth d takes ceil(B[d] / M) rounds, and enrichment takes ceil(N[depth] /
per_call) calls per task. Prompt tokens come from prompts rendered by the stages' own `build_request`
for a representative node at each depth (placeholder sibling and child names, the root's seed examples
as demonstrations): building a prompt needs only the config and the profile, so the dry run creates
no file. Completion tokens come from the
seed examples' length: per_call examples per enrichment call; per subtask, a name, a reason and
`examples_per_subtask` examples. Tokens are counted by `cost.estimate_tokens` (one per four characters).
With `rate` enabled, one rating call per example enrichment asks for (prompt rendered for a seed
example; completion the length of a typical one-sentence rating).
Not counted: top-up calls after quality drops, retries, and pruned tasks that skip enrichment.
With `filter.semantic` on, an `embed` row counts the embedding requests of every instruction written.
"""

from __future__ import annotations

import json
import math
import sqlite3
from dataclasses import asdict, dataclass
from typing import Any

from explore_instruct.config import PricingConfig, RunConfig, per_depth
from explore_instruct.cost import estimate_tokens, price, prompt_tokens
from explore_instruct.llm.base import CompletionRequest, Usage
from explore_instruct.prompting import PromptBuilder
from explore_instruct.runstore import EstimateRow, RunStore, load_estimate_rows, save_estimate_rows
from explore_instruct.start import LiveNode, live_start
from explore_instruct.tree import Example

# A typical subtask as the model writes it: a name of a few words and a one-sentence reason.
PLACEHOLDER_NAME = "Typical subtask name here"
PLACEHOLDER_REASON = "A one-sentence reason why this subtask is a useful part of its parent task."
# A typical rating as the judge writes it.
PLACEHOLDER_RATING = (
    '{"score": 7, "reason": "The output follows the instruction and is correct, but it could be clearer."}'
)
# JSON keys and punctuation around one subtask ({"name": ..., "reason": ..., "examples": [...]}).
SUBTASK_JSON_CHARS = 40


@dataclass
class StageEstimate:
    stage: str
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0

    def add(self, calls: int, prompt: int, completion: int) -> None:
        self.calls += calls
        self.prompt_tokens += calls * prompt
        self.completion_tokens += calls * completion


@dataclass
class RunEstimate:
    stages: list[StageEstimate]
    first_prompts: dict[str, str]  # stage -> the first prompt it would send

    def total(self) -> StageEstimate:
        total = StageEstimate("total")
        for s in self.stages:
            total.calls += s.calls
            total.prompt_tokens += s.prompt_tokens
            total.completion_tokens += s.completion_tokens
            total.cost += s.cost
        return total

    def cost_in_batch_mode(self, pricing: PricingConfig | None) -> float:
        """The total cost with enrichment sent through a batch API (`llm.batch`): its calls at `pricing`'s
        batch discount, the other stages' as estimated."""
        from explore_instruct.stages.generate import STAGE as BATCHED  # the stage batch mode sends

        total = self.total().cost
        for s in self.stages:
            if s.stage == BATCHED:
                total += price(Usage(s.prompt_tokens, s.completion_tokens), pricing, batch=True) - s.cost
        return total


def _example_tokens(examples: list[Example]) -> int:
    """Estimated tokens of one example as the model writes it (a JSON object), from the seeds' mean."""
    if not examples:
        return 60
    texts = [json.dumps({"instruction": e.instruction, "input": e.input, "output": e.output}) for e in examples]
    return math.ceil(sum(estimate_tokens(t) for t in texts) / len(texts))


def _subtask_tokens(example_tokens: int, examples_per: int) -> int:
    return (
        estimate_tokens(PLACEHOLDER_NAME + PLACEHOLDER_REASON) + SUBTASK_JSON_CHARS // 4 + examples_per * example_tokens
    )


def _placeholder(parent: LiveNode, index: int, examples: list[Example]) -> LiveNode:
    node = LiveNode(-1, f"{parent.key}/{index}", f"{PLACEHOLDER_NAME} {index}", PLACEHOLDER_REASON, parent.depth + 1)
    node.parent = parent
    node.examples = list(examples)
    parent.children.append(node)
    return node


def _representatives(root: LiveNode, config: RunConfig) -> list[LiveNode]:
    """One node per depth 0..K, each with a full set of placeholder siblings (what its prompts show)."""
    chain = [root]
    examples = root.examples[: config.explore.examples_per_subtask]
    for depth in range(config.explore.max_depth):
        parent = chain[-1]
        siblings = [_placeholder(parent, i, examples) for i in range(per_depth(config.explore.breadth, depth))]
        chain.append(siblings[0])
    return chain


def _level_counts(root: LiveNode, config: RunConfig) -> tuple[list[int], list[int]]:
    """Nodes per depth once exploration is done, and exploration calls per depth."""
    have: dict[int, int] = {}
    for node in root.walk():
        have[node.depth] = have.get(node.depth, 0) + 1
    cfg = config.explore
    depths = max(cfg.max_depth, max(have)) + 1
    nodes = [have.get(0, 1)] + [0] * (depths - 1)
    calls = [0] * depths
    for d in range(1, depths):
        existing = have.get(d, 0)
        if d > cfg.max_depth:
            nodes[d] = existing
            continue
        breadth = per_depth(cfg.breadth, d - 1)
        nodes[d] = max(existing, nodes[d - 1] * breadth)
        missing = nodes[d] - existing
        rounds = math.ceil(breadth / cfg.new_per_call)
        calls[d - 1] = nodes[d - 1] * rounds if existing == 0 else math.ceil(missing / cfg.new_per_call)
    return nodes, calls


def estimate_run(config: RunConfig) -> RunEstimate:
    """Calls, tokens and cost per LLM stage of `config`, rendered without touching any real run."""
    from explore_instruct.stages import explore as explore_stage
    from explore_instruct.stages import generate as generate_stage

    builder = PromptBuilder.of(config)
    root = live_start(config)
    nodes, explore_calls = _level_counts(root, config)
    seeds = root.examples or [ex for n in root.walk() for ex in n.examples]
    example_tokens = _example_tokens(seeds)
    chain = _representatives(LiveNode(root.id, root.key, root.name, root.reason, 0, None, [], seeds), config)

    explore = StageEstimate("explore")
    cfg = config.explore
    first: dict[str, CompletionRequest] = {}
    for depth, node in enumerate(chain[: cfg.max_depth]):
        breadth = per_depth(cfg.breadth, depth)
        rounds = math.ceil(breadth / cfg.new_per_call)
        per_node = nodes[depth] * rounds
        share = explore_calls[depth] / per_node if per_node else 0.0
        siblings_below = node.children  # the next depth's peers: put back after this depth's rounds
        for round_no in range(rounds):
            want = min(cfg.new_per_call, breadth - round_no * cfg.new_per_call)
            node.children = [_placeholder(node, i, []) for i in range(round_no * cfg.new_per_call)]
            request = explore_stage.build_request(builder, node, want, round_no)
            first.setdefault("explore", request)
            calls = round(nodes[depth] * share)
            explore.add(calls, prompt_tokens(request), want * _subtask_tokens(example_tokens, cfg.examples_per_subtask))
        node.children = siblings_below

    generate = StageEstimate("generate")
    gen = config.generate
    written = sum(count * per_depth(gen.examples_per_task, depth) for depth, count in enumerate(nodes))
    for depth, count in enumerate(nodes):
        node = chain[min(depth, len(chain) - 1)]
        work = generate_stage.NodeWork(node, per_depth(gen.examples_per_task, depth))
        calls = count * math.ceil(work.target / gen.per_call)
        if not calls:
            continue
        pool = generate_stage.demonstration_pool(work, gen.bootstrap)
        request = generate_stage.build_request(builder, work, 0, gen.per_call, pool)
        first.setdefault("generate", request)
        generate.add(calls, prompt_tokens(request), gen.per_call * example_tokens)
    rated = _rate_estimate(builder, nodes, seeds, first)

    batch = getattr(config.llm, "batch", None)
    batch_generate = bool(getattr(batch, "enabled", False))
    for stage in (explore, generate):
        usage = Usage(stage.prompt_tokens, stage.completion_tokens)
        stage.cost = price(usage, config.llm.pricing, batch=batch_generate and stage.stage == "generate")
    prompts = {stage: "\n\n".join(m.content for m in r.messages) for stage, r in first.items()}
    stages = [explore, generate, *rated]
    if config.filter.semantic.enabled:
        stages.append(_embed_estimate(config, written + len(seeds), seeds))
    return RunEstimate(stages, prompts)


def _rate_estimate(
    prompts: PromptBuilder, nodes: list[int], seeds: list[Example], first: dict[str, CompletionRequest]
) -> list[StageEstimate]:
    """The rate stage, when enabled: one call per example enrichment asks for (an upper bound, as
    quality drops, duplicates, the filter and decontamination leave fewer), priced with the judge's prices."""
    from explore_instruct.stages import rate as rate_stage

    config = prompts.config
    if not config.rate.enabled:
        return []
    examples = sum(count * per_depth(config.generate.examples_per_task, d) for d, count in enumerate(nodes))
    sample = seeds[0] if seeds else Example(PLACEHOLDER_NAME, "", PLACEHOLDER_REASON)
    request = rate_stage.build_request(
        prompts, "estimate", sample, [config.root.name if config.root else "", PLACEHOLDER_NAME]
    )
    first.setdefault("rate", request)
    stage = StageEstimate("rate")
    stage.add(examples, prompt_tokens(request), estimate_tokens(PLACEHOLDER_RATING))
    stage.cost = price(Usage(stage.prompt_tokens, stage.completion_tokens), config.rate.judge(config.llm).pricing)
    return [stage]


def _embed_estimate(config: RunConfig, texts: int, seeds: list[Example]) -> StageEstimate:
    """The semantic filter's embedding requests: every instruction written (and the seeds) once, in
    batches of `embeddings.batch_size`; tokens from the seed instructions' length. An upper bound:
    the ROUGE-L filter and the quality rules drop some first, and a rerun sends none."""
    instruction = math.ceil(sum(estimate_tokens(e.instruction) for e in seeds) / len(seeds)) if seeds else 15
    embed = StageEstimate("embed", calls=math.ceil(texts / config.embeddings.batch_size))
    embed.prompt_tokens = texts * instruction
    embed.cost = price(Usage(embed.prompt_tokens, 0), config.llm.pricing)
    return embed


def save_estimate(conn: sqlite3.Connection, estimate: RunEstimate) -> None:
    """Keep the estimate in the run's database for `stats` (a stage's first estimate stays)."""
    save_estimate_rows(conn, [EstimateRow(**asdict(s)) for s in estimate.stages])


def load_estimate(conn: sqlite3.Connection) -> dict[str, dict[str, Any]]:
    """The stored estimate per stage (empty for a run started before estimates were kept)."""
    return {r.stage: asdict(StageEstimate(**asdict(r))) for r in load_estimate_rows(conn)}


def estimate_vs_spent(store: RunStore) -> list[dict[str, Any]]:
    """Per LLM stage: the estimate stored at run start beside the calls and tokens actually logged.

    Cost is priced with the run's config (`llm.pricing`); without prices both costs are 0.
    """
    from explore_instruct.config import load_config
    from explore_instruct.errors import UserError
    from explore_instruct.runstore import CONFIG_FILE

    estimate = load_estimate(store.conn)
    if not estimate:
        return []
    try:
        pricing = load_config(store.run_dir / CONFIG_FILE).llm.pricing
    except UserError:
        pricing = None
    spent = store.calls.usage_by_stage()
    rows = []
    for stage, est in estimate.items():
        done = spent.get(stage, {})
        usage = Usage(done.get("prompt_tokens", 0), done.get("completion_tokens", 0))
        rows.append(
            {
                "stage": stage,
                "priced": pricing is not None,
                "estimate": est,
                "spent": {
                    "calls": done.get("calls", 0) + done.get("failed", 0),
                    "prompt_tokens": usage.prompt_tokens,
                    "completion_tokens": usage.completion_tokens,
                    "cost": price(usage, pricing),
                },
            }
        )
    return rows
