"""From a spec to cells and steps.

A cell is one dataset variant that is trained and evaluated: each named dataset is a cell, and each
value of an ablation axis over a dataset is another (`explore-depth1`, `explore-size2000`,
`explore-filter-off`). Each cell runs data → analysis → train → answer → judge / math.

A step's key is a hash of what determines its output: its kind, its own parameters, and the digests
of the steps it reads (a data step's digest is the hash of the records it wrote). So a model is keyed
by the data's content and the train settings: two cells with the same records train once, and
editing one axis changes the keys of the cells it touches only.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from explore_instruct.baselines.self_instruct import self_instruct_config
from explore_instruct.config import RunConfig
from explore_instruct.errors import UserError
from explore_instruct.experiment.spec import (
    ExperimentSpec,
    FileDataset,
    HumanCuratedDataset,
    RunDataset,
    SelfInstructDataset,
)

# Resources a step holds while it runs: LLM work runs side by side, training and local answering
# take the one device in turn, and the steps that rewrite a run store's filter/sample take that run.
LLM, DEVICE = "llm", "device"

# llm settings that change no request (so no reply): left out of a generation step's key.
_NOT_IN_REQUEST = ("max_concurrency", "timeout", "retries", "api_key_env")


@dataclass(frozen=True)
class Cell:
    name: str
    dataset: str
    axis: str | None = None  # "depth" | "size" | "filter" for an ablation cell
    value: Any = None


@dataclass
class Step:
    id: str  # unique within the experiment, e.g. "train:explore-depth1"
    kind: str  # generate | data | analysis | train | answer | judge | math
    params: dict[str, Any]
    deps: list[str] = field(default_factory=list)
    cells: list[str] = field(default_factory=list)
    resources: tuple[str, ...] = ()
    in_place: bool = False  # writes into its final folder itself (a resumable run directory)


@dataclass
class Plan:
    spec: ExperimentSpec
    config: RunConfig
    cells: list[Cell]
    steps: dict[str, Step]  # in an order where every dependency comes first
    comparisons: list[tuple[str, str, int]]  # (candidate cell, baseline cell, question file index)
    warnings: list[str] = field(default_factory=list)


def digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def file_digest(path: str | Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def step_key(step: Step, dep_digests: list[str]) -> str:
    return digest({"kind": step.kind, "params": step.params, "deps": dep_digests})


def cell_name(dataset: str, axis: str | None, value: Any) -> str:
    if axis is None:
        return dataset
    if axis == "filter":
        return f"{dataset}-filter-{'on' if value else 'off'}"
    return f"{dataset}-{axis}{value}"


def expand_cells(spec: ExperimentSpec) -> list[Cell]:
    cells = [Cell(name, name) for name in spec.datasets]
    for axis in spec.axes:
        cells.extend(Cell(cell_name(axis.dataset, axis.name, v), axis.dataset, axis.name, v) for v in axis.values)
    seen: set[str] = set()
    for c in cells:
        if c.name in seen:
            raise UserError(f"cell {c.name!r} appears twice (a dataset name clashes with an ablation cell)")
        seen.add(c.name)
    return cells


def generation_config(spec: ExperimentSpec, config: RunConfig, dataset: str) -> RunConfig:
    """The run config that generates a dataset of kind run or self_instruct."""
    ds = spec.datasets[dataset]
    if isinstance(ds, SelfInstructDataset):
        return self_instruct_config(config, ds.size or config.sample.size)
    return config


def _generation_params(cfg: RunConfig) -> dict[str, Any]:
    """What decides the generated pool: everything before the filter, minus transport and card settings."""
    data = cfg.model_dump(mode="json")
    # The generate step runs explore, prune and generate only: the later stages' settings change no reply.
    for section in ("filter", "sample", "decontaminate", "rate", "publish"):
        data.pop(section)
    for key in _NOT_IN_REQUEST:
        data["llm"].pop(key, None)
    return data


def _data_params(spec: ExperimentSpec, config: RunConfig, cell: Cell) -> dict[str, Any]:
    ds = spec.datasets[cell.dataset]
    params: dict[str, Any] = {"kind": ds.kind, "seed": spec.seed}
    if isinstance(ds, RunDataset | SelfInstructDataset):
        gen = generation_config(spec, config, cell.dataset)
        params["filter"] = gen.filter.model_dump(mode="json")
        params["sample"] = gen.sample.model_dump(mode="json")
        params["size"] = (ds.size if isinstance(ds, RunDataset) else None) or gen.sample.size
    elif isinstance(ds, HumanCuratedDataset):
        params.update(ds.model_dump(mode="json"))
    elif isinstance(ds, FileDataset):
        params.update(ds.model_dump(mode="json"), content=file_digest(ds.path))
    # Decontamination against the spec's own evaluation questions: their content is part of the key.
    params["decontaminate"] = {
        "questions": [file_digest(q) for q in evaluation_files(spec)],
        "ngram": config.decontaminate.ngram,
    }
    if cell.axis == "depth":
        params["sample"] = {**params["sample"], "max_depth": cell.value}
    elif cell.axis == "filter":
        params["filter"] = {**params["filter"], "enabled": cell.value}
    elif cell.axis == "size":
        params["size"] = cell.value
        params["nested"] = True  # a prefix of one seeded permutation of the whole pool
    return params


def evaluation_files(spec: ExperimentSpec) -> list[str]:
    """Every question file the spec evaluates on (open-ended, then math): what a dataset is decontaminated against."""
    ev = spec.evaluate
    return [*ev.questions, *([ev.math_questions] if ev.math_questions else [])]


def seed_source(spec: ExperimentSpec, config: RunConfig) -> dict[str, Any]:
    """Where the seed instructions for the overlap measure come from, as step parameters."""
    if spec.analysis.seeds:
        return {"file": spec.analysis.seeds, "content": file_digest(spec.analysis.seeds)}
    if config.root is not None:
        return {"instructions": [e.instruction for e in config.root.examples]}
    return {"tree": config.seed_tree}


def build_plan(spec: ExperimentSpec, config: RunConfig) -> Plan:
    """Every cell and every step, with dependencies; checks that baselines and pairs name cells."""
    cells = expand_cells(spec)
    names = {c.name for c in cells}
    ev = spec.evaluate
    for i, b in enumerate(ev.baselines):
        if b not in names:
            raise UserError(f"evaluate.baselines.{i}: {b!r} is not a cell (cells: {', '.join(sorted(names))})")
    for i, pair in enumerate(ev.pairs):
        for side in pair:
            if side not in names:
                raise UserError(f"evaluate.pairs.{i}: {side!r} is not a cell (cells: {', '.join(sorted(names))})")
    steps: dict[str, Step] = {}

    def add(step: Step, cell: str) -> Step:
        existing = steps.setdefault(step.id, step)
        if cell not in existing.cells:
            existing.cells.append(cell)
        return existing

    train_params = spec.train.model_dump(mode="json")
    train_params.pop("launcher")  # how a job is launched does not change the model it makes
    answer_params = ev.answer.model_dump(mode="json")
    answer_params.pop("batch_size")
    question_digests = [file_digest(q) for q in ev.questions]
    for cell in cells:
        ds = spec.datasets[cell.dataset]
        deps: list[str] = []
        if isinstance(ds, RunDataset | SelfInstructDataset):
            gen = generation_config(spec, config, cell.dataset)
            g = add(
                Step(
                    f"generate:{cell.dataset}",
                    "generate",
                    {"config": _generation_params(gen)},
                    resources=(LLM, f"run:{cell.dataset}"),
                    in_place=True,
                ),
                cell.name,
            )
            deps = [g.id]
        data = add(
            Step(
                f"data:{cell.name}", "data", _data_params(spec, config, cell), deps, resources=(f"run:{cell.dataset}",)
            ),
            cell.name,
        )
        if spec.analysis.enabled:
            params = {"seeds": seed_source(spec, config), "threshold": spec.analysis.overlap_threshold}
            add(Step(f"analysis:{cell.name}", "analysis", params, [data.id], resources=(DEVICE,)), cell.name)
        train = add(Step(f"train:{cell.name}", "train", train_params, [data.id], resources=(DEVICE,)), cell.name)
        for qi, qd in enumerate(question_digests):
            add(
                Step(
                    f"answer:{cell.name}:{qi}",
                    "answer",
                    {**answer_params, "questions": qd},
                    [train.id],
                    resources=(DEVICE,),
                ),
                cell.name,
            )
        if ev.math_questions:
            md = file_digest(ev.math_questions)
            a = add(
                Step(
                    f"answer-math:{cell.name}",
                    "answer",
                    {**answer_params, "questions": md},
                    [train.id],
                    resources=(DEVICE,),
                ),
                cell.name,
            )
            add(Step(f"math:{cell.name}", "math", {"questions": md, "timeout": ev.math_timeout}, [a.id]), cell.name)

    comparisons: list[tuple[str, str, int]] = []
    for cand in cells:
        for base in ev.baselines:
            if base != cand.name:
                comparisons.extend((cand.name, base, qi) for qi in range(len(ev.questions)))
    for cand_name, base in ev.pairs:
        comparisons.extend((cand_name, base, qi) for qi in range(len(ev.questions)) if cand_name != base)
    comparisons = list(dict.fromkeys(comparisons))
    if comparisons:
        assert ev.judge is not None  # checked with the spec
        judge = ev.judge
        judge_params = {
            "llm": {k: v for k, v in judge.llm.model_dump(mode="json").items() if k not in _NOT_IN_REQUEST},
            **judge.settings_dict(),
        }
        for cand_name, base, qi in comparisons:
            add(
                Step(
                    judge_id(cand_name, base, qi),
                    "judge",
                    {**judge_params, "questions": question_digests[qi]},
                    [f"answer:{base}:{qi}", f"answer:{cand_name}:{qi}"],
                    resources=(LLM,),
                ),
                cand_name,
            )
    return Plan(spec, config, cells, steps, comparisons)


def judge_id(candidate: str, baseline: str, qi: int) -> str:
    return f"judge:{candidate}:vs:{baseline}:{qi}"


def select_cells(plan: Plan, only: list[str] | None) -> set[str]:
    """The cells to run: all, or those named by --only (each must be a cell)."""
    names = [c.name for c in plan.cells]
    if not only:
        return set(names)
    unknown = [o for o in only if o not in names]
    if unknown:
        raise UserError(f"only {unknown[0]}: not a cell (cells: {', '.join(names)})", settings=("only",))
    return set(only)


def steps_for(plan: Plan, cells: set[str]) -> list[Step]:
    """The steps the chosen cells need (their own and everything those read), in dependency order."""
    wanted: set[str] = set()

    def need(step_id: str) -> None:
        if step_id in wanted:
            return
        wanted.add(step_id)
        for dep in plan.steps[step_id].deps:
            need(dep)

    for step in plan.steps.values():
        if set(step.cells) & cells:
            need(step.id)
    return [s for s in plan.steps.values() if s.id in wanted]
