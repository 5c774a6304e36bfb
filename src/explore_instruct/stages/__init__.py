"""The paper's stages, in the order a full run takes them.

Each stage is a module with `run(ctx)` returning a result dataclass, and a row here that says what it
needs: a stored tree (explore first, or a seed tree) and the run's LLM client (and under which
settings). `pipeline.py` walks this table and provides or checks what each row asks for before running it.
Pruning needs only task names, so it comes before enrichment and no call is spent on a pruned task.
Decontamination comes before rating for the same reason: no rating call on a contaminated example.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from explore_instruct.config import RunConfig
from explore_instruct.context import RunContext
from explore_instruct.stages import decontaminate, explore, filter, generate, prune, rate, sample, semantic
from explore_instruct.stages.decontaminate import DecontaminateResult
from explore_instruct.stages.explore import ExploreResult
from explore_instruct.stages.filter import DiversityResult
from explore_instruct.stages.generate import GenerateResult
from explore_instruct.stages.prune import PruneResult
from explore_instruct.stages.rate import RateResult
from explore_instruct.stages.sample import SampleResult


@dataclass(frozen=True)
class Needs:
    """What a stage needs before it runs."""

    tree: bool = False  # a stored tree: exploration ran (or the run started from a seed tree)
    llm: bool = False  # the run's LLM client (the rate stage may have its own, `RunContext.stage_clients`)
    llm_if: Callable[[RunConfig], bool] | None = None  # when the LLM is needed only under some settings


@dataclass(frozen=True)
class Stage:
    name: str
    run: Callable[[RunContext], Awaitable[Any]]  # returns the stage's result dataclass (`RunResults`)
    needs: Needs = field(default_factory=Needs)

    def calls_llm(self, config: RunConfig) -> bool:
        """Whether this stage sends LLM calls under `config`."""
        return self.needs.llm and (self.needs.llm_if is None or self.needs.llm_if(config))


R = TypeVar("R")


def _sync(run: Callable[[RunContext], R]) -> Callable[[RunContext], Awaitable[R]]:
    """A stage without I/O to wait for, run as the pipeline runs every stage."""

    async def stage(ctx: RunContext) -> R:
        return run(ctx)

    return stage


STAGES: tuple[Stage, ...] = (
    Stage(explore.STAGE, explore.run, Needs(llm=True)),
    Stage(prune.STAGE, _sync(prune.run)),
    Stage(generate.STAGE, generate.run, Needs(llm=True)),
    Stage(filter.STAGE, _sync(filter.run), Needs(tree=True)),
    Stage(semantic.STAGE, semantic.run, Needs(tree=True)),  # embeddings only: `RunContext.embedding_client`
    Stage(decontaminate.STAGE, _sync(decontaminate.run), Needs(tree=True)),
    Stage(rate.STAGE, rate.run, Needs(tree=True, llm=True, llm_if=lambda config: config.rate.enabled)),
    Stage(sample.STAGE, _sync(sample.run), Needs(tree=True)),
)
BY_NAME = {stage.name: stage for stage in STAGES}
ALL_STAGES: tuple[str, ...] = tuple(BY_NAME)


@dataclass
class RunResults:
    """What each stage that ran reported (None: it did not run), named by stage."""

    explore: ExploreResult | None = None
    prune: PruneResult | None = None
    generate: GenerateResult | None = None
    filter: DiversityResult | None = None
    semantic: DiversityResult | None = None
    decontaminate: DecontaminateResult | None = None
    rate: RateResult | None = None
    sample: SampleResult | None = None

    def record(self, stage: str, result: Any) -> None:
        setattr(self, stage, result)

    def ran(self, *stages: str) -> bool:
        """Whether any of `stages` ran."""
        return any(getattr(self, s) is not None for s in stages)
