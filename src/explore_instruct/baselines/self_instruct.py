"""Domain-Aware Self-Instruct: the paper's no-exploration baseline (K = 0).

The same root task and seed examples, no tree: the root alone is enriched to the target size with
demonstrations drawn from its growing pool (self-instruct's bootstrapping), then passes through
the same selection stages as an Explore-Instruct run.
"""

from __future__ import annotations

import math

from explore_instruct.config import RunConfig, build_config


def self_instruct_config(config: RunConfig, num: int | None = None) -> RunConfig:
    """`config` turned into its self-instruct baseline of `num` examples (default: the sample size)."""
    target = num or config.sample.size
    per_call = config.generate.per_call
    data = config.model_dump(mode="json")
    data["explore"]["max_depth"] = 0
    data["generate"].update(
        examples_per_task=[target],
        bootstrap=True,
        # Quality drops and duplicates leave the root short; allow a quarter more calls to top up.
        max_extra_calls=max(config.generate.max_extra_calls, math.ceil(target / per_call / 4)),
    )
    data["sample"]["size"] = target
    data["sample"]["max_depth"] = 0
    return build_config(data, "self-instruct baseline")
