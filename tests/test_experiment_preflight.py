"""Everything a study needs is checked before its first step, by a real run and by `--dry-run` alike.

Missing extras are simulated (a module set to None in sys.modules cannot be imported), and every step
executor is replaced by one that records its call: a refused study must not have started any step.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from explore_instruct.cli import main
from explore_instruct.errors import MissingExtra, UserError
from explore_instruct.experiment import run_experiment
from explore_instruct.experiment import steps as steps_module
from explore_instruct.installation import install_command
from tests.test_experiment_helpers import write_study

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "configs" / "experiments" / "demo.yaml"


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The ids of the steps that began; each fake step fails at once, so nothing heavy runs."""
    calls: list[str] = []

    def record(step: Any, _ctx: Any) -> dict[str, Any]:
        calls.append(step.id)
        raise steps_module.StepFailed("a test step")

    for kind in list(steps_module.EXECUTORS):
        monkeypatch.setitem(steps_module.EXECUTORS, kind, record)
    return calls


def _model_dir(tmp_path: Path) -> Path:
    """A folder that passes for a Hugging Face model (no step loads it here)."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    return model


def _one_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def _both_ways(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[str, str]:
    """The error line of a real run and of --dry-run (each must exit 2)."""
    assert main(args) == 2
    run = _one_line(capsys)
    assert main([*args, "--dry-run"]) == 2
    return run, _one_line(capsys)


# --- extras -----------------------------------------------------------------------------------------


def test_demo_study_without_extras_stops_before_any_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], started: list[str]
) -> None:
    """The demo spec after `make demo` (core only): one line naming the extras and the install line."""
    for module in ("spacy", "trl"):
        monkeypatch.setitem(sys.modules, module, None)
    out = tmp_path / "out"
    run, dry = _both_ways(["experiment", str(DEMO), "--out", str(out)], capsys)
    assert run == dry
    assert "'analysis', 'train' extras (spacy, trl are not installed)" in run, run
    assert run.endswith(install_command(["analysis", "train"])), run
    assert started == [] and not out.exists()


def test_math_needs_the_eval_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], started: list[str]
) -> None:
    monkeypatch.setitem(sys.modules, "math_verify", None)
    spec = write_study(tmp_path / "spec", _model_dir(tmp_path))
    with pytest.raises(MissingExtra, match=r"'eval' extra \(math_verify is not installed\)"):
        run_experiment(spec, tmp_path / "out")
    assert started == [] and not (tmp_path / "out").exists()
    # A study without math problems does not need it.
    spec = write_study(tmp_path / "spec2", tmp_path / "model", evaluate={"math_questions": None})
    assert main(["experiment", str(spec), "--out", str(tmp_path / "o2"), "--dry-run"]) == 0


def test_install_hint_follows_the_installation(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """From a clone (editable install) the hint is `pip install -e '<clone>[x]'`; else the index name."""
    from explore_instruct import installation

    class Dist:
        def __init__(self, direct_url: dict[str, Any] | None) -> None:
            self.text = None if direct_url is None else json.dumps(direct_url)

        def read_text(self, _name: str) -> str | None:
            return self.text

    clone = tmp_path / "explore instruct"
    editable = {"url": clone.as_uri(), "dir_info": {"editable": True}}
    monkeypatch.setattr(installation.metadata, "distribution", lambda _n: Dist(editable))
    assert installation.install_command(["analysis", "train"]) == f"pip install -e '{clone}[analysis,train]'"
    assert f"pip install -e '{clone}[train]'" in str(MissingExtra("train", "trl"))
    monkeypatch.setattr(installation.metadata, "distribution", lambda _n: Dist(None))  # a wheel from an index
    assert installation.install_command(["train"]) == "pip install 'explore-instruct[train]'"
    built = {"url": clone.as_uri(), "dir_info": {}}  # `pip install .`: a copy, not the clone
    monkeypatch.setattr(installation.metadata, "distribution", lambda _n: Dist(built))
    assert installation.install_command(["eval"]) == "pip install 'explore-instruct[eval]'"


# --- the spec's contents ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("section", "change", "field"),
    [
        ("train", {"epochs": float("inf"), "max_steps": -1}, "train.epochs"),
        ("train", {"learning_rate": float("nan")}, "train.learning_rate"),
        ("train", {"learning_rate": float("inf")}, "train.learning_rate"),
        ("train", {"max_steps": -7}, "train.max_steps"),
        ("evaluate", {"answer": {"temperature": float("inf")}}, "evaluate.answer.temperature"),
    ],
)
def test_numbers_must_be_finite_and_bounded(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    started: list[str],
    section: str,
    change: dict[str, Any],
    field: str,
) -> None:
    spec = write_study(tmp_path / "spec", _model_dir(tmp_path), **{section: change})
    run, dry = _both_ways(["experiment", str(spec), "--out", str(tmp_path / "out")], capsys)
    assert field in run and field in dry and str(spec) in run, run
    assert started == []


def test_judge_without_base_url_is_refused_before_any_step(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], started: list[str]
) -> None:
    judge = {"llm": {"backend": "openai", "model": "judge", "base_url": None}}
    spec = write_study(tmp_path / "spec", _model_dir(tmp_path), evaluate={"judge": judge})
    run, dry = _both_ways(["experiment", str(spec), "--out", str(tmp_path / "out")], capsys)
    assert "evaluate.judge: llm.base_url is required" in run and run == dry, run
    assert started == [] and not (tmp_path / "out").exists()


def test_judge_key_variable_must_be_set_and_is_never_echoed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], started: list[str]
) -> None:
    judge = {"llm": {"api_key_env": "STUDY_JUDGE_KEY"}}
    spec = write_study(tmp_path / "spec", _model_dir(tmp_path), evaluate={"judge": judge})
    monkeypatch.delenv("STUDY_JUDGE_KEY", raising=False)
    run, _dry = _both_ways(["experiment", str(spec), "--out", str(tmp_path / "out")], capsys)
    assert "evaluate.judge" in run and "STUDY_JUDGE_KEY" in run, run
    monkeypatch.setenv("STUDY_JUDGE_KEY", "sk-secret-value-123")
    assert main(["experiment", str(spec), "--out", str(tmp_path / "out"), "--dry-run"]) == 0
    captured = capsys.readouterr()
    assert "sk-secret-value-123" not in captured.out + captured.err
    assert started == []


def test_base_model_folder_that_is_not_a_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], started: list[str]
) -> None:
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    spec = write_study(tmp_path / "spec", empty)
    run, dry = _both_ways(["experiment", str(spec), "--out", str(tmp_path / "out")], capsys)
    assert "train.model" in run and "no config.json" in run and run == dry, run
    assert started == []


def test_question_file_that_does_not_parse(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], started: list[str]
) -> None:
    spec = write_study(tmp_path / "spec", _model_dir(tmp_path))
    questions = spec.parent / "questions.jsonl"
    questions.write_text('{"question_id": "q1", "question": "Fine."}\nnot json\n')
    assert main(["experiment", str(spec), "--out", str(tmp_path / "out")]) == 2
    assert str(questions) in _one_line(capsys)
    assert started == [] and not (tmp_path / "out").exists()


# --- --out ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"notes.txt": "mine"}, "holds other files and no experiment"),
        ({"spec.resolved.yaml": yaml.safe_dump({"name": "another"})}, "holds the experiment 'another', not 'tiny'"),
    ],
    ids=["other-files", "another-experiment"],
)
def test_out_folder_that_is_not_this_experiment_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], started: list[str], files: dict[str, str], message: str
) -> None:
    spec = write_study(tmp_path / "spec", _model_dir(tmp_path))
    out = tmp_path / "papers"
    out.mkdir()
    for name, text in files.items():
        (out / name).write_text(text)
    run, dry = _both_ways(["experiment", str(spec), "--out", str(out), "--resume"], capsys)
    assert message in run and run == dry, run
    assert sorted(p.name for p in out.iterdir()) == sorted(files) and started == []


def test_out_folder_empty_or_of_this_experiment_is_accepted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from explore_instruct.experiment import load_plan
    from explore_instruct.experiment.preflight import check_out_dir

    spec = write_study(tmp_path / "spec", _model_dir(tmp_path))
    plan = load_plan(spec)
    out = tmp_path / "out"
    out.mkdir()
    check_out_dir(plan, out, resume=False)  # empty
    (out / "spec.resolved.yaml").write_text(yaml.safe_dump({"name": "tiny", "seed": 99}))  # an edited spec
    (out / "explore_instruct.db").write_bytes(b"")
    check_out_dir(plan, out, resume=True)
    with pytest.raises(UserError, match="pass resume"):
        check_out_dir(plan, out, resume=False)
    assert main(["experiment", str(spec), "--out", str(out), "--dry-run"]) == 0
    file_out = tmp_path / "a-file"
    file_out.write_text("x")
    with pytest.raises(UserError, match="not a folder"):
        check_out_dir(plan, file_out, resume=True)
