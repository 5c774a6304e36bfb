"""`--dry-run`: which steps each cell will run or reuse, and an estimate of the work.

Keys that depend on data not made yet are unknown, so such steps (and everything after them) are
listed as `run`. The estimates are upper bounds from the settings: LLM calls for generation (one
lookahead call per M subtasks a node needs, one enrichment call per `per_call` examples) and for
judging (two orders per question), answers from the trained models, and training examples seen.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from explore_instruct.config import RunConfig, per_depth
from explore_instruct.evaluate.questions import read_questions
from explore_instruct.experiment.plan import Plan, Step, generation_config
from explore_instruct.experiment.runner import DB_FILE, Runner
from explore_instruct.runstore.experiment_db import ExperimentDB


@dataclass
class Preview:
    rows: list[tuple[str, str, str]] = field(default_factory=list)  # (cell, step id, "run" | "reuse")
    llm_calls: int = 0
    answers: int = 0
    train_examples: int = 0
    trainings: int = 0


def generation_calls(cfg: RunConfig) -> int:
    """An upper estimate of a generation run's LLM calls (before retries and top-ups)."""
    ex, gen = cfg.explore, cfg.generate
    calls, level = 0, 1
    for depth in range(ex.max_depth + 1):
        enrich = math.ceil(per_depth(gen.examples_per_task, depth) / gen.per_call)
        calls += level * enrich
        if depth < ex.max_depth:
            b = per_depth(ex.breadth, depth)
            calls += level * math.ceil(b / ex.new_per_call)
            level *= b
    return calls


def _examples_trained(plan: Plan, examples: int) -> int:
    t = plan.spec.train
    if t.max_steps > 0:
        return t.max_steps * t.global_batch_size
    if t.max_examples is not None:
        examples = min(examples, t.max_examples)
    return math.ceil(examples * t.epochs)


def _requested(plan: Plan, step: Step) -> int:
    size = step.params.get("size")
    return int(size) if size is not None else plan.config.sample.size


def preview(plan: Plan, out_dir: str | Path, only: list[str] | None = None) -> Preview:
    runner = Runner(plan, out_dir, only=only, read_only=True)
    db_path = Path(runner.out_dir) / DB_FILE
    runner.db = ExperimentDB(db_path, readonly=True) if db_path.is_file() else None
    out = Preview()
    question_counts = [len(read_questions(q)) for q in plan.spec.evaluate.questions]
    math_count = len(read_questions(plan.spec.evaluate.math_questions)) if plan.spec.evaluate.math_questions else 0
    examples: dict[str, int] = {}
    try:
        for step in runner.steps:
            state = runner.states[step.id]
            key = runner.key_of(step)
            row = runner._finished(step, key) if key is not None and runner.db is not None else None
            if row is not None:
                state.key, state.digest = key, row["digest"]
                state.status = "cached"
                if step.kind == "data":
                    examples[step.id] = int(row["info"].get("examples") or 0)
                out.rows.append((step.cells[0], step.id, "reuse"))
                continue
            out.rows.append((step.cells[0], step.id, "run"))
            if step.kind == "generate":
                out.llm_calls += generation_calls(generation_config(plan.spec, plan.config, step.id.split(":", 1)[1]))
            elif step.kind == "judge":
                out.llm_calls += 2 * question_counts[int(step.id.rsplit(":", 1)[1])]
            elif step.kind == "answer":
                out.answers += (
                    math_count
                    if step.id.startswith("answer-math:")
                    else question_counts[int(step.id.rsplit(":", 1)[1])]
                )
            elif step.kind == "train":
                data = step.deps[0]
                n = examples.get(data, _requested(plan, plan.steps[data]))
                out.train_examples += _examples_trained(plan, n)
                out.trainings += 1
    finally:
        if runner.db is not None:
            runner.db.close()
    return out
