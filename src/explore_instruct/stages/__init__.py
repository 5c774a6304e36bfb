"""The paper's stages, in the order a full run takes them.

Each stage is a module with `run(ctx)` that checks its own preconditions (a stage that needs a tree
says so when there is none) and writes its results to the run store. `pipeline.py` walks this table.
Pruning needs only task names, so it comes before enrichment and no call is spent on a pruned task.
Decontamination comes before rating for the same reason: no rating call on a contaminated example.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from explore_instruct.stages import decontaminate, explore, filter, generate, prune, rate, sample, semantic


@dataclass(frozen=True)
class Stage:
    name: str
    run: Callable[..., Any]  # run(ctx); a coroutine function for the stages that call the LLM
    uses_llm: bool


STAGES: tuple[Stage, ...] = (
    Stage(explore.STAGE, explore.run, uses_llm=True),
    Stage(prune.STAGE, prune.run, uses_llm=False),
    Stage(generate.STAGE, generate.run, uses_llm=True),
    Stage(filter.STAGE, filter.run, uses_llm=False),
    Stage(semantic.STAGE, semantic.run, uses_llm=False),  # embeddings only: its client is its own
    Stage(decontaminate.STAGE, decontaminate.run, uses_llm=False),
    Stage(rate.STAGE, rate.run, uses_llm=True),
    Stage(sample.STAGE, sample.run, uses_llm=False),
)
BY_NAME = {stage.name: stage for stage in STAGES}
ALL_STAGES: tuple[str, ...] = tuple(BY_NAME)
