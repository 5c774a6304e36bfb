"""The experiment spec: a strict pydantic model of the YAML file that describes a whole study.

Every problem is one `UserError` naming the file and the field: a missing file, an unknown dataset,
an empty axis, a baseline that is not a cell. Relative paths are read relative to the spec file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from explore_instruct.config import LLMConfig, RunConfig, load_config, read_yaml_mapping
from explore_instruct.errors import UserError
from explore_instruct.evaluate.answer import AnswerSettings
from explore_instruct.evaluate.judge import JudgeSettings
from explore_instruct.settings import describe, location
from explore_instruct.train.config import TrainSettings

CELL_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")


class Strict(BaseModel):
    # Every number must be finite: `epochs: .inf` is refused here, not by the trainer hours later.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class RunDataset(Strict):
    """The exploration run's own data: the run's sample (its `sample` settings, `size` overriding)."""

    kind: Literal["run"]
    size: int | None = Field(None, ge=1, description="examples to sample (default: the run config's sample.size)")


class SelfInstructDataset(Strict):
    """Domain-aware self-instruct: the same root and seeds, no exploration (K = 0)."""

    kind: Literal["self_instruct"]
    size: int | None = Field(None, ge=1)


class HumanCuratedDataset(Strict):
    """Examples sampled from a local Super-NaturalInstructions copy."""

    kind: Literal["human_curated"]
    superni: str
    categories: list[str] | None = None
    size: int = Field(10_000, ge=1)
    english_only: bool = True


class FileDataset(Strict):
    """Any Alpaca file (JSON list or JSONL of instruction/input/output)."""

    kind: Literal["file"]
    path: str
    size: int | None = Field(None, ge=1, description="use a seeded sample of this many records")


Dataset = Annotated[RunDataset | SelfInstructDataset | HumanCuratedDataset | FileDataset, Field(discriminator="kind")]


class Axis(Strict):
    """One ablation over one dataset; exactly one of depth, size, filter."""

    dataset: str
    depth: list[int] | None = None
    size: list[int] | None = None
    filter: list[bool] | None = None

    @model_validator(mode="after")
    def _one_axis(self) -> Axis:
        given = [name for name in ("depth", "size", "filter") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of depth, size or filter")
        values = getattr(self, given[0])
        if not values:
            raise ValueError(f"the {given[0]} axis is empty")
        if len(set(values)) != len(values):
            raise ValueError(f"the {given[0]} axis repeats a value")
        if given[0] in ("depth", "size") and any(v < (0 if given[0] == "depth" else 1) for v in values):
            raise ValueError(f"{given[0]} values must be {'>= 0' if given[0] == 'depth' else '>= 1'}")
        return self

    @property
    def name(self) -> str:
        return next(n for n in ("depth", "size", "filter") if getattr(self, n) is not None)

    @property
    def values(self) -> list[Any]:
        return list(getattr(self, self.name))


class TrainSpec(TrainSettings):
    """Every `train` setting (the one model, `train/config.py`), the base model, and how to launch it
    (this Python in a child process, or a launcher for GPUs)."""

    not_settings: ClassVar[frozenset[str]] = frozenset({"model", "launcher"})

    model: str = "embedded"
    launcher: str | None = Field(
        None, description="e.g. 'accelerate launch --config_file cfg.yaml'; default: this Python, in a child process"
    )


# The answer settings are the `answer` command's, the same model.
AnswerSpec = AnswerSettings


class JudgeSpec(JudgeSettings):
    """The `judge` command's settings and the judge's endpoint (an `llm` section, as in a run config)."""

    not_settings: ClassVar[frozenset[str]] = frozenset({"llm"})

    llm: LLMConfig


class EvaluateSpec(Strict):
    questions: list[str] = Field(default_factory=list, description="open-ended question files (judged pairwise)")
    answer: AnswerSpec = Field(default_factory=AnswerSpec)
    judge: JudgeSpec | None = None
    baselines: list[str] = Field(default_factory=list, description="every cell is compared against each of these")
    pairs: list[tuple[str, str]] = Field(default_factory=list, description="extra (candidate, baseline) pairs")
    math_questions: str | None = None
    math_timeout: int = Field(5, ge=1)


class AnalysisSpec(Strict):
    enabled: bool = True
    seeds: str | None = Field(None, description="seed instructions (record file); default: the run's root examples")
    overlap_threshold: float = Field(0.7, ge=0, le=1)


class RunnerSpec(Strict):
    llm_workers: int = Field(4, ge=1, le=64, description="LLM steps (generation, judging) in flight at once")
    delete_weights: bool = Field(False, description="delete a cell's model once its answers exist")


class ExperimentSpec(Strict):
    name: str = Field(min_length=1)
    run: str = Field(description="the exploration run config this study builds on")
    seed: int = 0
    datasets: dict[str, Dataset] = Field(min_length=1)
    axes: list[Axis] = Field(default_factory=list)
    train: TrainSpec = Field(default_factory=TrainSpec)
    evaluate: EvaluateSpec = Field(default_factory=EvaluateSpec)
    analysis: AnalysisSpec = Field(default_factory=AnalysisSpec)
    runner: RunnerSpec = Field(default_factory=RunnerSpec)

    @field_validator("datasets")
    @classmethod
    def _names(cls, v: dict[str, Any]) -> dict[str, Any]:
        for name in v:
            if not name or not set(name) <= CELL_NAME_CHARS:
                raise ValueError(f"dataset name {name!r}: use letters, digits, '_' and '-' only")
        return v

    @model_validator(mode="after")
    def _references(self) -> ExperimentSpec:
        for i, axis in enumerate(self.axes):
            if axis.dataset not in self.datasets:
                raise ValueError(f"axes.{i}.dataset: unknown dataset {axis.dataset!r} (known: {self._known()})")
            kind = self.datasets[axis.dataset].kind
            if axis.name in ("depth", "filter") and kind != "run":
                raise ValueError(
                    f"axes.{i}: a {axis.name} axis needs a dataset of kind 'run' ({axis.dataset} is {kind})"
                )
        return self

    def _known(self) -> str:
        return ", ".join(self.datasets)


def _location(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(p for p in location(err) if not p.endswith("Dataset"))
    msg, _ = describe(err)  # as the command line says it, the setting's path in place of its flag
    return f"{loc}: {msg}" if loc else msg  # a check across fields names its own field


def _resolve(base: Path, value: str) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else (base / p).resolve()


def _require_file(source: Path, field: str, path: Path, *, directory: bool = False) -> None:
    ok = path.is_dir() if directory else path.is_file()
    if not ok:
        raise UserError(f"{source}: {field}: {path}: no such {'directory' if directory else 'file'}")


def check_paths(spec: ExperimentSpec, source: Path, *, strict: bool = True) -> list[str]:
    """Resolve every path against the spec's folder and check that each exists (one line per problem).

    With `strict` off (a dry run), the paths only the training machine needs (the base model, a
    SuperNI copy) may be missing: each such one comes back as a warning instead of an error.
    """
    base = source.parent
    warnings: list[str] = []

    def machine_path(field: str, path: Path, *, directory: bool = False) -> None:
        try:
            _require_file(source, field, path, directory=directory)
        except UserError as exc:
            if strict:
                raise
            warnings.append(str(exc))

    spec.run = str(_resolve(base, spec.run))
    _require_file(source, "run", Path(spec.run))
    for name, ds in spec.datasets.items():
        if isinstance(ds, HumanCuratedDataset):
            ds.superni = str(_resolve(base, ds.superni))
            machine_path(f"datasets.{name}.superni", Path(ds.superni), directory=True)
        elif isinstance(ds, FileDataset):
            ds.path = str(_resolve(base, ds.path))
            _require_file(source, f"datasets.{name}.path", Path(ds.path))
    ev = spec.evaluate
    ev.questions = [str(_resolve(base, q)) for q in ev.questions]
    for i, q in enumerate(ev.questions):
        _require_file(source, f"evaluate.questions.{i}", Path(q))
    if ev.math_questions:
        ev.math_questions = str(_resolve(base, ev.math_questions))
        _require_file(source, "evaluate.math_questions", Path(ev.math_questions))
    if spec.analysis.seeds:
        spec.analysis.seeds = str(_resolve(base, spec.analysis.seeds))
        _require_file(source, "analysis.seeds", Path(spec.analysis.seeds))
    if spec.train.model != "embedded":  # a local model folder or .gguf file, relative to the spec
        spec.train.model = str(_resolve(base, spec.train.model))
        machine_path("train.model", Path(spec.train.model), directory=not spec.train.model.endswith(".gguf"))
    if ev.questions and ev.judge is None:
        raise UserError(f"{source}: evaluate.judge: open-ended questions need a judge (an llm section)")
    if (ev.baselines or ev.pairs) and not ev.questions:
        raise UserError(f"{source}: evaluate.questions: comparisons need at least one question file")
    return warnings


def load_spec(path: str | Path, *, strict: bool = True) -> tuple[ExperimentSpec, RunConfig, list[str]]:
    """Read and validate a spec and the run config it names; any problem is one UserError.

    Returns the spec, the run config and warnings (missing machine paths, only when not `strict`)."""
    source = Path(path)
    if not source.exists():
        raise UserError(f"{source}: no such experiment spec")
    # The run config's reader: a folder, a device, non-UTF-8 bytes or a duplicate key are one line too.
    data = read_yaml_mapping(source, "a YAML experiment spec", "spec sections (run, datasets, ...)")
    try:
        spec = ExperimentSpec.model_validate(data)
    except ValidationError as exc:
        raise UserError(f"{source}: {_location(exc)}") from None
    warnings = check_paths(spec, source, strict=strict)
    config = load_config(spec.run)
    for name, ds in spec.datasets.items():
        if isinstance(ds, HumanCuratedDataset) and not ds.categories:
            from explore_instruct.baselines.human_curated import DEFAULT_CATEGORIES

            if config.domain not in DEFAULT_CATEGORIES:
                raise UserError(
                    f"{source}: datasets.{name}.categories: the run's domain '{config.domain}' has no default "
                    "SuperNI categories; list them"
                )
    return spec, config, warnings


def spec_yaml(spec: ExperimentSpec) -> str:
    """The resolved spec (absolute paths, defaults filled in), as written into the output folder."""
    return yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
