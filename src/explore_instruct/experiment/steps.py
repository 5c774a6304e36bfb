"""What each step kind does: the one place that calls the project's commands.

Most run as Python functions in this process; training and answering with a local model run as
`explore-instruct train` / `answer` in a child process (`child.py`), so their memory is freed when
each step ends.

Every adapter takes the step, the folders of the steps it reads and a work folder to write into,
and returns a small JSON-able `info` (the numbers the results table shows, with the file each came
from). When a command's signature changes, this is the only file to fix.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from explore_instruct.config import RunConfig, build_config
from explore_instruct.datafile import read_records, write_records
from explore_instruct.experiment.plan import Plan, Step, generation_config
from explore_instruct.experiment.spec import FileDataset, HumanCuratedDataset
from explore_instruct.llm.base import LLM

if TYPE_CHECKING:
    from explore_instruct.evaluate.judge import JudgeSettings
    from explore_instruct.train.config import TrainConfig

DATA_FILE = "data.json"
ANSWERS_FILE = "answers.jsonl"
MODEL_DIR = "model"
GENERATION_STAGES = ("explore", "prune", "generate")  # the generate step: one pool shared by the cells
DATA_STAGES = ("filter", "semantic", "decontaminate", "rate", "sample")  # each data step: the cell's settings


class StepFailed(Exception):
    """A step that ran but whose result must not be used (the reason is recorded, other cells go on)."""


@dataclass
class Backends:
    """Where LLM backends come from; tests pass scripted ones, the CLI leaves both to the configs."""

    generator: Callable[[RunConfig], LLM] | None = None
    judge: Callable[[], LLM] | None = None


@dataclass
class StepInput:
    path: Path
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class StepContext:
    plan: Plan
    out_dir: Path
    work: Path  # where the step writes (renamed to its final folder once it succeeds)
    key: str
    inputs: dict[str, StepInput]
    backends: Backends

    def input(self, kind: str) -> StepInput:
        return next(v for k, v in self.inputs.items() if k.split(":", 1)[0] == kind)


# --- dataset ------------------------------------------------------------------------------------


def run_generate(step: Step, ctx: StepContext) -> dict[str, Any]:
    """Explore and enrich (the run's own data or the self-instruct baseline) in a resumable run dir."""
    from explore_instruct.pipeline import run_stages

    dataset = step.id.split(":", 1)[1]
    cfg = generation_config(ctx.plan.spec, ctx.plan.config, dataset)
    backend = ctx.backends.generator(cfg) if ctx.backends.generator else None
    run, _ = run_stages(cfg, ctx.work, GENERATION_STAGES, resume=True, backend=backend)
    try:
        examples = sum(1 for r in run.store.examples(status="ok") if r.origin != "seed")
        tasks = len(run.store.nodes())
    finally:
        run.store.close()
    return {"tasks": tasks, "examples": examples, "run_dir": str(ctx.work)}


def _run_records(step: Step, ctx: StepContext, size: int) -> list[dict[str, str]]:
    """The cell's data: the stages after generation, as `run` takes them (with the cell's filter and
    sample settings), on the shared generated pool."""
    from explore_instruct.export import alpaca_record
    from explore_instruct.pipeline import calls_llm, run_on_store
    from explore_instruct.runstore import RunStore

    p = step.params
    base = generation_config(ctx.plan.spec, ctx.plan.config, _dataset_of(step, ctx))
    data = base.model_dump(mode="json")
    data.update(filter=p["filter"], sample={**p["sample"], "size": size})
    cfg = build_config(data, f"{step.id}")
    backend = ctx.backends.generator(cfg) if ctx.backends.generator and calls_llm(cfg, DATA_STAGES) else None
    store = RunStore.open(ctx.input("generate").path, write=True)
    try:
        _, results = run_on_store(store, cfg, DATA_STAGES, backend=backend)
        drawn = results.sample is not None and results.sample.size
        return [alpaca_record(r) for r in store.dataset("sample")] if drawn else []
    finally:
        store.close()


def _pool_size(ctx: StepContext) -> int:
    from explore_instruct.runstore import RunStore

    store = RunStore.open(ctx.input("generate").path)
    try:
        return max(1, len(store.examples()))
    finally:
        store.close()


def _source_records(step: Step, ctx: StepContext, size: int | None) -> list[dict[str, str]]:
    """Records of a human-curated or file dataset: a seeded sample of `size` (None: all, shuffled)."""
    from explore_instruct.analysis.datasets import normalise_records

    ds = ctx.plan.spec.datasets[_dataset_of(step, ctx)]
    seed = ctx.plan.spec.seed
    if isinstance(ds, HumanCuratedDataset):
        from explore_instruct.baselines.human_curated import categories_for, sample_superni

        cats = categories_for(ctx.plan.config.domain, ds.categories)
        records, _ = sample_superni(ds.superni, cats, size or 10**9, seed=seed, english_only=ds.english_only)
        return records
    assert isinstance(ds, FileDataset)
    raw, _ = read_records(ds.path)
    records = [{k: r[k] for k in ("instruction", "input", "output")} for r in normalise_records(raw, ds.path)]
    return random.Random(seed).sample(records, min(size or len(records), len(records)))


def _dataset_of(step: Step, ctx: StepContext) -> str:
    cell = step.id.split(":", 1)[1]
    return next(c.dataset for c in ctx.plan.cells if c.name == cell)


def run_data(step: Step, ctx: StepContext) -> dict[str, Any]:
    """The cell's training records. A size-axis cell takes a prefix of one seeded permutation of the
    whole pool, so the smaller samples nest inside the larger; a pool too small is a failed cell."""
    p = step.params
    size = p["size"] if p.get("size") is not None else p.get("sample", {}).get("size")
    nested = bool(p.get("nested"))
    from_run = "generate" in {k.split(":", 1)[0] for k in ctx.inputs}
    if from_run:
        records = _run_records(step, ctx, _pool_size(ctx) if nested else size)
    else:
        records = _source_records(step, ctx, None if nested else size)
    records, removed = _decontaminate(records, ctx)
    pool = len(records)
    if nested:
        if size > pool:
            raise StepFailed(f"size {size} is larger than the pool ({pool} examples): not shrunk, cell not trained")
        records = records[:size]
    if not records:
        raise StepFailed("no examples to train on")
    write_records(ctx.work / DATA_FILE, records, "json")
    info: dict[str, Any] = {"examples": len(records), "requested": size, "pool": pool if nested else None}
    info["short"] = size is not None and len(records) < size
    info["decontaminated"] = removed
    return info


def _decontaminate(records: list[dict[str, str]], ctx: StepContext) -> tuple[list[dict[str, str]], int]:
    """Drop the records that share an n-gram with the spec's own evaluation questions (before training)."""
    from explore_instruct.decontaminate import build_index, decontaminate_records
    from explore_instruct.experiment.plan import evaluation_files

    files = evaluation_files(ctx.plan.spec)
    if not files:
        return records, 0
    index = build_index(files, ctx.plan.config.decontaminate.ngram)
    kept, removed = decontaminate_records(records, index, "the cell's data")
    return kept, sum(removed.values())


# --- analysis -----------------------------------------------------------------------------------

_NLP: Any = None


def _nlp() -> Any:
    global _NLP
    if _NLP is None:
        from explore_instruct.analysis.verbnoun import load_nlp

        _NLP = load_nlp()
    return _NLP


def _seeds(step: Step, ctx: StepContext) -> list[str]:
    from explore_instruct.analysis.datasets import load_seed_instructions

    source = step.params["seeds"]
    if "instructions" in source:
        return list(source["instructions"])
    return load_seed_instructions(Path(source.get("file") or source["tree"]))


def run_analysis(step: Step, ctx: StepContext) -> dict[str, Any]:
    from explore_instruct.analysis.datasets import AnalysedDataset, normalise_records
    from explore_instruct.analysis.report import AnalysisOptions, analyze

    data_path = ctx.input("data").path / DATA_FILE
    raw, _ = read_records(data_path)
    ds = AnalysedDataset("data", normalise_records(raw, str(data_path)), None, str(data_path), "file")
    seeds = _seeds(step, ctx)
    options = AnalysisOptions(overlap_threshold=step.params["threshold"])
    embed = _embeddings(ctx.work)
    try:
        summary = analyze(
            [ds],
            ctx.work,
            seeds=seeds,
            seeds_note=f"{len(seeds)} seed instructions",
            options=options,
            nlp=_nlp(),
            embed=embed,
        )
    finally:
        embed.close()
    d = summary["datasets"]["data"]
    overlap = d.get("seed_overlap") or {}
    return {
        "unique_verb_noun_pairs": d["verb_noun"]["unique_pairs"],
        "rouge_l_to_seeds": overlap.get("mean"),
        "vendi_score": d["diversity"]["vendi_score"],
        "distinct_1": d["diversity"]["distinct_1"],
        "distinct_2": d["diversity"]["distinct_2"],
        "file": "summary.json",
    }


def _embeddings(work: Path) -> Any:
    """The embedded embedding model, its vectors cached for this step only (the step's folder is its artefact)."""
    from explore_instruct.llm.embed_client import BlockingEmbeddings, EmbeddingClient
    from explore_instruct.llm.embeddings import build_embedder
    from explore_instruct.runstore import VectorCache

    return BlockingEmbeddings(EmbeddingClient(build_embedder("local"), VectorCache.in_memory()))


# --- training -----------------------------------------------------------------------------------


def _train_config(step: Step, data: Path, out: Path) -> TrainConfig:
    from explore_instruct.train.config import TrainConfig

    return TrainConfig(data=data, out=out, **step.params)


def train_command(launcher: str | None, cfg: TrainConfig) -> list[str]:
    """The `train` command line for `cfg`: every setting, each under its own name (which `train` takes)."""
    from explore_instruct.experiment.child import command_line

    return command_line(
        launcher, "train", {"data": cfg.data, "model": cfg.model, "out": cfg.out, **cfg.settings_dict()}
    )


def _losses(model_dir: Path) -> list[float]:
    from explore_instruct.train.sft import LOG_FILE

    log = model_dir / LOG_FILE
    if not log.is_file():
        return []
    return [
        float(r["loss"]) for r in (json.loads(line) for line in log.read_text().splitlines() if line) if "loss" in r
    ]


def run_train(step: Step, ctx: StepContext) -> dict[str, Any]:
    """Train in a child process (`child.py`): `python -m explore_instruct train ...`, or the spec's
    launcher. A diverged run fails the step with the command's one line and saves no model."""
    from explore_instruct.experiment.child import run_child
    from explore_instruct.train.sft import LOG_FILE, SETTINGS_FILE

    data = ctx.input("data").path / DATA_FILE
    model_dir = ctx.work / MODEL_DIR
    cfg = _train_config(step, data, model_dir)
    peak = run_child(train_command(ctx.plan.spec.train.launcher, cfg), "train")
    settings = json.loads((model_dir / SETTINGS_FILE).read_text(encoding="utf-8"))
    losses = _losses(model_dir)
    result = settings.get("result", {})
    final = result.get("train_loss")
    return {
        "final_train_loss": losses[-1] if losses else final,
        "train_loss": final,
        "steps": result.get("global_steps"),
        "examples": settings.get("num_examples"),
        "peak_rss_gib": peak,
        "file": f"{MODEL_DIR}/{LOG_FILE}",
    }


# --- evaluation ---------------------------------------------------------------------------------


def questions_path(step: Step, ctx: StepContext) -> str:
    ev = ctx.plan.spec.evaluate
    if step.id.startswith("answer-math:") or step.kind == "math":
        assert ev.math_questions is not None
        return ev.math_questions
    return ev.questions[int(step.id.rsplit(":", 1)[1])]


def answer_command(step: Step, ctx: StepContext, out: Path) -> list[str]:
    """The `answer` command line of a step: the cell's model and every answer setting of the spec."""
    from explore_instruct.experiment.child import command_line

    options = {
        "questions": questions_path(step, ctx),
        "out": out,
        "model": ctx.input("train").path / MODEL_DIR,
        **ctx.plan.spec.evaluate.answer.settings_dict(),
        "model_id": step.cells[0],
    }
    return command_line(None, "answer", options)


def run_answer(step: Step, ctx: StepContext) -> dict[str, Any]:
    """Answer in a child process (`child.py`): `python -m explore_instruct answer ...`."""
    from explore_instruct.experiment.child import run_child

    model = ctx.input("train").path / MODEL_DIR
    if not (model / "config.json").is_file():
        raise StepFailed(f"{model}: the model's weights are gone (deleted after answering); its train step reruns")
    out = ctx.work / ANSWERS_FILE
    peak = run_child(answer_command(step, ctx, out), "answer")
    records, _ = read_records(out)
    truncated = sum(r.get("finish_reason") == "length" for r in records)
    return {"answered": len(records), "truncated": truncated, "peak_rss_gib": peak, "file": ANSWERS_FILE}


def judge_backend(ctx: StepContext) -> LLM:
    if ctx.backends.judge is not None:
        return ctx.backends.judge()
    from explore_instruct.llm.factory import backend_from_config

    judge = ctx.plan.spec.evaluate.judge
    assert judge is not None
    # A text verdict is free text; json (or auto) lets the backend use its structured output.
    return backend_from_config(judge.llm, structured_output="text" if judge.format == "text" else None)


def judge_settings(ctx: StepContext) -> JudgeSettings:
    """The judge settings of the spec: every one of the `judge` command's settings."""
    from explore_instruct.evaluate.judge import JudgeSettings

    judge = ctx.plan.spec.evaluate.judge
    assert judge is not None
    return JudgeSettings(**judge.settings_dict())


def run_judge(step: Step, ctx: StepContext) -> dict[str, Any]:
    from explore_instruct.evaluate.stages import EndpointSettings, judge_files

    judge = ctx.plan.spec.evaluate.judge
    assert judge is not None
    baseline, candidate = (ctx.inputs[d].path / ANSWERS_FILE for d in step.deps)
    out = ctx.work / "judge.json"
    outcome = judge_files(
        questions_path(step, ctx),
        baseline,
        candidate,
        out,
        judge_backend(ctx),
        judge_settings(ctx),
        table_path=ctx.work / "judge.md",
        # The judge's call cache lives outside the step's folder, so a judge that failed part-way resumes
        # without paying again. One file per comparison: two judges writing the same request into one
        # cache at the same moment would collide.
        endpoint=EndpointSettings(
            concurrency=judge.llm.max_concurrency,
            retries=judge.llm.retries,
            cache=ctx.out_dir / "cache" / f"judge-{ctx.key[:16]}.sqlite",
        ),
    )
    if outcome.failed_pairs:
        raise StepFailed(
            f"{outcome.failed_pairs} pair(s) not judged (the judge kept failing); finished reviews are cached, "
            "resume the experiment to retry the rest"
        )
    overall = next(s for s in outcome.summaries if s["cls"] == "overall")
    return {
        **{
            k: overall[k]
            for k in ("win", "tie", "lose", "beat_rate", "ci_low", "ci_high", "disagreement_rate", "unparsed", "failed")
        },
        "file": "judge.json",
    }


def run_math(step: Step, ctx: StepContext) -> dict[str, Any]:
    from explore_instruct.evaluate.stages import math_eval_files

    answers = ctx.input("answer-math").path / ANSWERS_FILE
    result = math_eval_files(
        questions_path(step, ctx),
        answers,
        ctx.work / "math.json",
        verdicts_path=ctx.work / "math.verdicts.jsonl",
        timeout=step.params["timeout"],
    )
    overall = result.summary["overall"]
    return {
        "accuracy": overall["accuracy"],
        "correct": overall["correct"],
        "graded": overall["graded"],
        "file": "math.json",
    }


EXECUTORS: dict[str, Callable[[Step, StepContext], dict[str, Any]]] = {
    "generate": run_generate,
    "data": run_data,
    "analysis": run_analysis,
    "train": run_train,
    "answer": run_answer,
    "judge": run_judge,
    "math": run_math,
}
