"""Every setting reaches every path: the command's flag, the experiment spec's section and the launched step.

The lists of settings come from the one model of each concept (training, answering, judging, the LLM
endpoint), and a value for each that is not its default is derived from the field's type and checks, so
a setting added to a model is checked here on every path without touching this file.
"""

from __future__ import annotations

import sys
import typing
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Literal

import annotated_types
import pytest
import typer.main
from pydantic import BaseModel, ValidationError

from explore_instruct.cli import app, main
from explore_instruct.cli.vocabulary import flag_of
from explore_instruct.config import ENDPOINT_SETTINGS, LLMConfig
from explore_instruct.evaluate.answer import AnswerSettings
from explore_instruct.evaluate.judge import JudgeSettings
from explore_instruct.experiment import steps
from explore_instruct.experiment.plan import Step
from explore_instruct.experiment.spec import ExperimentSpec, _location
from explore_instruct.llm.scripted import ScriptedLLM
from explore_instruct.settings import SettingError, build
from explore_instruct.train.config import TrainConfig, TrainSettings

URL = "http://127.0.0.1:8000/v1"


def _candidates(name: str, annotation: Any, default: Any) -> list[Any]:
    """Values of a setting's type other than its default, in the order they are tried."""
    types_ = [a for a in (typing.get_args(annotation) or (annotation,)) if a is not type(None)]
    if typing.get_origin(annotation) is Literal:
        return [c for c in typing.get_args(annotation) if c != default]
    kind = types_[0]
    if typing.get_origin(kind) is Literal:
        return [c for c in typing.get_args(kind) if c != default]
    if kind is bool:
        return [not default if default is not None else True]
    if kind is int:
        return [v for v in (3, 1, 200, 4096, 5000) if v != default]
    if kind is float:
        return [v for v in (0.5, 0.25, 1.5, 7.0) if v != default]
    return [f"{name}-x", URL]


def non_defaults(model: type[BaseModel], names: list[str], /, **fixed: Any) -> dict[str, Any]:
    """A value other than the default for each of `names`, every one accepted by the model together."""
    values: dict[str, Any] = {}
    for name in names:
        field = model.model_fields[name]
        for candidate in _candidates(name, field.annotation, field.default):
            try:
                build(model, **fixed, **values, **{name: candidate})
            except SettingError:
                continue
            values[name] = candidate
            break
        else:
            pytest.fail(f"{model.__name__}.{name}: found no valid value other than the default")
    return values


def bad_value(model: type[BaseModel], name: str) -> Any:
    """A value the model's own checks refuse (None for a setting that takes any value of its type)."""
    field = model.model_fields[name]
    if typing.get_origin(field.annotation) is Literal:
        return "bogus"
    for check in field.metadata:
        if isinstance(check, annotated_types.Gt | annotated_types.Ge):
            bound = getattr(check, "gt", None) if isinstance(check, annotated_types.Gt) else check.ge - 1
            return bound
        if isinstance(check, annotated_types.Lt | annotated_types.Le):
            return getattr(check, "lt", None) if isinstance(check, annotated_types.Lt) else check.le + 1
    return None


def command(name: str) -> Any:
    return typer.main.get_command(app).commands[name]  # type: ignore[attr-defined]


def cli_defaults(name: str) -> dict[str, Any]:
    return {p.name: p.default for p in command(name).params}


def cli_flags(name: str) -> set[str]:
    return {opt for p in command(name).params for opt in p.opts}


CONCEPTS = {"train": TrainSettings, "answer": AnswerSettings, "judge": JudgeSettings}
BAD = [
    (cmd, model, name, bad_value(model, name))
    for cmd, model in CONCEPTS.items()
    for name in model.setting_names()
    if bad_value(model, name) is not None
]
REQUIRED = {
    "train": ["--data", "d.json", "--model", "m", "--out", "o"],
    "answer": ["--questions", "q.jsonl", "--out", "a.jsonl"],
    "judge": ["--questions", "q", "--baseline", "b", "--candidate", "c", "--out", "o.json"],
}
SPEC_SECTION = {"train": ("train",), "answer": ("evaluate", "answer"), "judge": ("evaluate", "judge")}


def spec_data(**sections: Any) -> dict[str, Any]:
    judge = {"llm": {"backend": "openai", "base_url": URL, "model": "judge"}, **sections.get("judge", {})}
    return {
        "name": "s",
        "run": "run.yaml",
        "datasets": {"a": {"kind": "run"}},
        "train": sections.get("train", {}),
        "evaluate": {"questions": ["q.jsonl"], "answer": sections.get("answer", {}), "judge": judge},
    }


# --- the command line ---------------------------------------------------------------------------


@pytest.mark.parametrize(("cmd", "model"), CONCEPTS.items(), ids=CONCEPTS)
def test_every_setting_is_a_flag_of_the_command_with_the_models_default(cmd: str, model: type[BaseModel]) -> None:
    defaults = cli_defaults(cmd)
    for name in model.setting_names():  # type: ignore[attr-defined]
        assert name in defaults, f"{cmd} has no option for the setting {name}"
        assert defaults[name] == model.model_fields[name].default, name
        assert flag_of(name) in cli_flags(cmd), f"{cmd}: {name} is not spelled {flag_of(name)}"


@pytest.mark.parametrize("cmd", ["answer", "judge"])
def test_every_endpoint_setting_is_a_flag_with_the_llm_sections_default(cmd: str) -> None:
    defaults = cli_defaults(cmd)
    for name in ENDPOINT_SETTINGS:
        assert defaults[name] == LLMConfig.model_fields[name].default, name
        assert flag_of(name) in cli_flags(cmd)


# --- the experiment spec ------------------------------------------------------------------------


@pytest.mark.parametrize(("cmd", "model"), CONCEPTS.items(), ids=CONCEPTS)
def test_the_spec_section_takes_every_setting_with_the_same_default(cmd: str, model: type[BaseModel]) -> None:
    names = model.setting_names()  # type: ignore[attr-defined]
    default_spec = ExperimentSpec.model_validate(spec_data())
    values = non_defaults(model, names)
    spec = ExperimentSpec.model_validate(spec_data(**{cmd: values}))
    path = SPEC_SECTION[cmd]
    section, default_section = spec, default_spec
    for part in path:
        section, default_section = getattr(section, part), getattr(default_section, part)
    assert section.setting_names() == names  # the section has no setting the command lacks
    for name in names:
        assert getattr(default_section, name) == model.model_fields[name].default, name
        assert getattr(section, name) == values[name], name


def test_the_judges_endpoint_takes_every_endpoint_setting() -> None:
    values = non_defaults(LLMConfig, list(ENDPOINT_SETTINGS), backend="openai", model="judge")
    spec = ExperimentSpec.model_validate(spec_data(judge={"llm": {"backend": "openai", "model": "judge", **values}}))
    assert spec.evaluate.judge is not None
    assert {name: getattr(spec.evaluate.judge.llm, name) for name in ENDPOINT_SETTINGS} == values


# --- shared validation --------------------------------------------------------------------------


@pytest.mark.parametrize(("cmd", "model", "name", "bad"), BAD, ids=[f"{c}.{n}" for c, _, n, _ in BAD])
def test_a_bad_value_is_refused_by_the_command_and_the_spec_naming_the_same_setting(
    cmd: str, model: type[BaseModel], name: str, bad: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([cmd, *REQUIRED[cmd], flag_of(name), str(bad)]) == 2
    cli_message = capsys.readouterr().err
    with pytest.raises(ValidationError) as refused:
        ExperimentSpec.model_validate(spec_data(**{cmd: {name: bad}}))
    spec_message = _location(refused.value)
    setting_path = ".".join((*SPEC_SECTION[cmd], name))
    assert spec_message.startswith(f"{setting_path}: ")
    problem = spec_message.removeprefix(f"{setting_path}: ").split(" (got")[0]
    # The same problem, named by the setting in the spec and by its flag on the command line.
    assert f"{flag_of(name)} {problem}" in " ".join(cli_message.split())


ENDPOINT_BAD = [
    (name, bad_value(LLMConfig, name)) for name in ENDPOINT_SETTINGS if bad_value(LLMConfig, name) is not None
]


@pytest.mark.parametrize(("name", "bad"), ENDPOINT_BAD, ids=[n for n, _ in ENDPOINT_BAD])
def test_a_bad_endpoint_value_is_refused_by_the_commands_and_the_spec_alike(
    name: str, bad: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ValidationError) as refused:
        ExperimentSpec.model_validate(spec_data(judge={"llm": {"backend": "openai", "model": "judge", name: bad}}))
    spec_message = _location(refused.value)
    assert spec_message.startswith(f"evaluate.judge.llm.{name}: ")
    problem = spec_message.removeprefix(f"evaluate.judge.llm.{name}: ")
    for cmd in ("answer", "judge"):
        assert main([cmd, *REQUIRED[cmd], "--base-url", URL, "--model", "m", flag_of(name), str(bad)]) == 2
        assert f"{flag_of(name)} {problem}" in " ".join(capsys.readouterr().err.split())


def test_a_library_message_names_the_setting_and_the_command_line_its_flag(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SettingError, match=r"^max_tokens_per_batch must be at least max_length \(one full row\)"):
        build(TrainSettings, max_length=512, max_tokens_per_batch=100)
    assert main(["train", *REQUIRED["train"], "--lora-target-modules", "q", "--lr", "0"]) == 2
    assert "error: --lr must be positive" in capsys.readouterr().err


# --- the launched path --------------------------------------------------------------------------


def test_the_launched_train_command_passes_every_setting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    names = TrainSettings.setting_names()
    values = non_defaults(TrainSettings, names)
    step = Step("train:a", "train", {"model": "m", **values})
    cfg = steps._train_config(step, tmp_path / "data.json", tmp_path / "model")
    args = steps.train_command("accelerate launch --num_processes 2", cfg)
    assert args[:3] == ["accelerate", "launch", "--num_processes"]
    received: list[TrainConfig] = []

    def fake_train(cfg: TrainConfig) -> Any:
        received.append(cfg)
        return SimpleNamespace(main_process=False)

    monkeypatch.setattr("explore_instruct.train.sft.train", fake_train)
    assert args[args.index("explore_instruct") - 1 :][:2] == ["-m", "explore_instruct"]
    assert main(args[args.index("explore_instruct") + 1 :]) == 0  # what the child process runs
    (child,) = received
    for name in names:
        assert getattr(child, name) == values[name], f"{name} did not reach the child"
    assert (child.data, child.model, child.out) == (cfg.data, "m", cfg.out)


def _context(tmp_path: Path, spec: ExperimentSpec, judge: Any = None) -> steps.StepContext:
    inputs = {d: steps.StepInput(tmp_path / d.replace(":", "_")) for d in ("train:a", "answer:a:0", "answer:b:0")}
    plan = SimpleNamespace(spec=spec)
    return steps.StepContext(plan, tmp_path, tmp_path / "work", "k" * 64, inputs, steps.Backends(judge=judge))  # type: ignore[arg-type]


def test_the_launched_answer_command_passes_every_setting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    names = AnswerSettings.setting_names()
    values = non_defaults(AnswerSettings, names)
    spec = ExperimentSpec.model_validate(spec_data(answer=values))
    ctx = _context(tmp_path, spec)
    args = steps.answer_command(Step("answer:a:0", "answer", {}, cells=["a"]), ctx, tmp_path / "answers.jsonl")
    assert args[:4] == [sys.executable, "-m", "explore_instruct", "answer"]
    received: list[AnswerSettings] = []

    def fake_answer_file(questions: Any, out: Any, settings: AnswerSettings, **_: Any) -> Any:
        received.append(settings)
        return SimpleNamespace(answered=0, model_id="a", truncated=0, out=out)

    monkeypatch.setattr("explore_instruct.evaluate.stages.answer_file", fake_answer_file)
    assert main(args[3:]) == 0
    (child,) = received
    assert {name: getattr(child, name) for name in names} == values


def test_the_judge_step_passes_every_setting_and_its_endpoint(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    names = JudgeSettings.setting_names()
    values = non_defaults(JudgeSettings, names)
    llm = non_defaults(LLMConfig, list(ENDPOINT_SETTINGS), backend="openai", model="judge")
    spec = ExperimentSpec.model_validate(
        spec_data(judge={**values, "llm": {"backend": "openai", "model": "judge", **llm}})
    )
    ctx = _context(tmp_path, spec, judge=lambda: ScriptedLLM(lambda r: "", model_id="judge"))
    received: dict[str, Any] = {}

    def fake_judge_files(*args: Any, endpoint: Any, **_: Any) -> Any:
        received.update(settings=args[5], endpoint=endpoint)
        overall = dict.fromkeys(
            ("win", "tie", "lose", "beat_rate", "ci_low", "ci_high", "disagreement_rate", "unparsed", "failed"), 0
        )
        return SimpleNamespace(failed_pairs=0, summaries=[{"cls": "overall", **overall}])

    monkeypatch.setattr("explore_instruct.evaluate.stages.judge_files", fake_judge_files)
    steps.run_judge(Step("judge:b:vs:a:0", "judge", {}, deps=["answer:a:0", "answer:b:0"]), ctx)
    assert received["settings"].settings_dict() == {**JudgeSettings().settings_dict(), **values}
    assert (received["endpoint"].concurrency, received["endpoint"].retries) == (llm["max_concurrency"], llm["retries"])


@pytest.mark.parametrize("cmd", ["answer", "judge"])
def test_the_endpoint_flags_reach_the_backend_settings(
    cmd: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    llm = non_defaults(LLMConfig, list(ENDPOINT_SETTINGS), backend="openai", model="judge")
    built: list[LLMConfig] = []

    def fake_backend(config: LLMConfig, **_: Any) -> Any:
        built.append(config)
        raise SettingError("model", "stops here (test)")

    monkeypatch.setattr("explore_instruct.llm.factory.backend_from_config", fake_backend)
    flags = [word for name, value in llm.items() for word in (flag_of(name), str(value))]
    assert main([cmd, *REQUIRED[cmd], "--model", "judge", *flags]) == 2
    assert "stops here" in capsys.readouterr().err
    (config,) = built
    assert {name: getattr(config, name) for name in ENDPOINT_SETTINGS} == llm


def test_runs_llm_options_come_from_the_llm_section(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """`run`'s LLM options are derived from LLMConfig: same help, and each reaches the config as llm.NAME."""
    from explore_instruct.cli import pipeline as cli_pipeline

    params = {p.name: p for p in command("run").params}
    for name in cli_pipeline.RUN_LLM_OVERRIDES:
        assert flag_of(name) in params[name].opts
        assert params[name].help == LLMConfig.model_fields[name].description
        assert params[name].default is None  # not given: the config's value stands
    values = {"backend": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "served", "max_tokens": 77}
    given = {name: values.get(name, 3) for name in cli_pipeline.RUN_LLM_OVERRIDES}
    build(LLMConfig, **given)  # a valid llm section
    seen: dict[str, Any] = {}

    def config(_path: Path, _run_dir: Path, _resume: bool, overrides: dict[str, Any]) -> None:
        seen.update(overrides)
        raise SystemExit(0)

    monkeypatch.setattr(cli_pipeline, "_config", config)
    argv = [f"{flag_of(name)}={value}" for name, value in given.items()]
    with pytest.raises(SystemExit):
        main(["run", str(tmp_path / "c.yaml"), *argv])
    assert all(isinstance(v, int | str) for v in seen.values())
    assert seen == {f"llm.{name}": value for name, value in given.items()}


def test_no_derived_option_shows_a_python_type_in_help(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A validated field (Annotated) is shown by the type Typer parses, not by its Python spelling."""
    monkeypatch.setenv("COLUMNS", "400")
    for name in ("run", "answer", "judge", "train"):
        main([name, "--help"])
        shown = capsys.readouterr().out
        assert "--base-url" in shown or name == "train"
        assert "typing." not in shown and "Validator" not in shown, name
