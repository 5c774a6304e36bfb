"""Shared test helpers: small configs and a run driven by the fake model."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from explore_instruct.config import RunConfig, build_config
from explore_instruct.llm.scripted import ScriptedLLM
from explore_instruct.pipeline import ALL_STAGES, run_stages
from tests.fakes import fake_model

BASE: dict[str, Any] = {
    "domain": "generic",
    "seed": 7,
    "root": {
        "name": "Assistance for text editing",
        "description": "Help people improve and transform written text.",
        "examples": [
            {
                "instruction": "Rewrite this sentence to sound more formal.",
                "input": "gonna be late",
                "output": "I will be late.",
            },
            {
                "instruction": "Fix the grammar of the following text.",
                "input": "He go home.",
                "output": "He goes home.",
            },
            {
                "instruction": "Make this paragraph shorter without losing meaning.",
                "input": "A long text.",
                "output": "Short.",
            },
        ],
    },
    "explore": {"max_depth": 2, "breadth": [3, 2], "new_per_call": 2},
    "generate": {"examples_per_task": [4], "per_call": 2},
    "sample": {"size": 20},
    "llm": {"max_concurrency": 4, "retries": 1},
}


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def make_config(**over: Any) -> RunConfig:
    return build_config(merge(BASE, over), "test")


def fake_backend(**kwargs: Any) -> ScriptedLLM:
    return ScriptedLLM(fake_model, **kwargs)


def run_fake(run_dir: Path, config: RunConfig | None = None, stages=ALL_STAGES, backend=None):
    backend = backend or fake_backend()
    ctx, results = run_stages(config or make_config(), run_dir, stages, backend=backend)
    return ctx, results, backend
