"""The experiment runner end to end: scripted generator and judge, a tiny random model trained for real.

One study (two datasets, depth / size / filter axes, a judge baseline, math) runs once per module;
the other tests copy its output folder to edit, break or resume it.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import yaml

from explore_instruct.cli import main
from explore_instruct.datafile import read_records
from explore_instruct.errors import UserError
from explore_instruct.experiment import load_plan, run_experiment
from explore_instruct.experiment import steps as steps_module
from explore_instruct.experiment.plan import judge_id
from explore_instruct.experiment.runner import DB_FILE, ExperimentDB, training_runs
from explore_instruct.llm.base import TransientLLMError
from explore_instruct.llm.scripted import ScriptedLLM
from explore_instruct.runstore.experiment_db import EventRow
from tests.test_experiment_helpers import QUESTIONS, backends, judge_reply, write_study

pytest.importorskip("trl")
pytest.importorskip("spacy")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from explore_instruct.train.tiny import build_tiny_llama
    from tests.fakes import NOUNS, VERBS

    corpus = [q["question"] for q in QUESTIONS] + [f"{v} {n}" for v in VERBS for n in NOUNS]
    return build_tiny_llama(tmp_path_factory.mktemp("tiny") / "model", corpus)


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("study")
    spec = write_study(root / "spec", tiny_model)
    plan, states, result = run_experiment(spec, root / "out", backends=backends())
    return {"root": root, "spec": spec, "out": root / "out", "plan": plan, "states": states, "result": result}


def _copy(study: dict[str, Any], tmp_path: Path) -> tuple[Path, Path]:
    spec_dir = tmp_path / "spec"
    shutil.copytree(study["spec"].parent, spec_dir)
    shutil.copytree(study["out"], tmp_path / "out")
    return spec_dir / "study.yaml", tmp_path / "out"


def _copy_with_axis(
    study: dict[str, Any], tmp_path: Path, index: int, name: str, values: list[Any]
) -> tuple[Path, Path]:
    """A copy of the study whose axis `index` now lists `values`."""
    spec, out = _copy(study, tmp_path)
    data = yaml.safe_load(spec.read_text())
    data["axes"][index][name] = values
    spec.write_text(yaml.safe_dump(data, sort_keys=False))
    return spec, out


def _events(out: Path, event: str) -> list[EventRow]:
    db = ExperimentDB(out / DB_FILE)
    try:
        return db.events(event)
    finally:
        db.close()


def _edit(spec: Path, **changes: Any) -> None:
    data = yaml.safe_load(spec.read_text())
    data.update(changes)
    spec.write_text(yaml.safe_dump(data, sort_keys=False))


# --- the whole study ------------------------------------------------------------------------------


def test_study_writes_every_table_and_figure(study: dict[str, Any]) -> None:
    out = study["out"]
    for name in ("results.json", "results.csv", "results.md", "report.html", "spec.resolved.yaml"):
        assert (out / name).is_file(), name
    for figure in ("beat_rate_vs_k.png", "beat_rate_vs_size.png", "verb_noun_pairs.png"):
        assert (out / figure).read_bytes()[:4] == b"\x89PNG", figure
    cells = {r["cell"]: r for r in study["result"]["cells"]}
    assert set(cells) == {
        "explore",
        "self_instruct",
        "explore-depth1",
        "explore-depth2",
        "explore-size4",
        "explore-size8",
        "explore-filter-off",
    }
    assert all(r["status"] == "ok" for r in cells.values()), [r["problems"] for r in cells.values()]
    md = (out / "results.md").read_text()
    for title in ("Main comparison", "K ablation", "Size ablation", "Filter ablation"):
        assert f"## {title}" in md
    assert "| self_instruct (baseline) | 0 |" in md  # the paper's K = 0 row
    assert "| explore | on |" in md and "| explore | off |" in md  # the filter is on in the run's own cell
    html = (out / "report.html").read_text()
    judge_file = cells["explore"]["sources"]["vs self_instruct"]
    assert f'href="{judge_file}"' in html and "data:image/png;base64," in html
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [r["cell"] for r in rows] == list(cells)
    assert "link" not in md.split("## Setup")[0]  # results.md claims no links it lacks
    assert "report.html links to them" in md and "Each number links to the file" in html
    assert cells["explore"]["comparisons"]["self_instruct"]["win"] + cells["explore"]["comparisons"]["self_instruct"][
        "lose"
    ] + cells["explore"]["comparisons"]["self_instruct"]["tie"] == len(QUESTIONS)
    # The study's card: the results tables under its own heading, the YAML the Hub reads.
    from explore_instruct.publish.frontmatter import read_front_matter

    card = (out / "README.md").read_text(encoding="utf-8")
    assert read_front_matter(card)["configs"][0]["data_files"][0]["path"] == "results.csv"
    assert "### K ablation" in card and "](beat_rate_vs_k.png)" in card


def test_reports_say_what_was_measured(study: dict[str, Any]) -> None:
    """The setup comes first in results.md and report.html: models, questions, training; every table
    shows the examples each cell trained on; no table compares final training losses."""
    out = study["out"]
    md, html = (out / "results.md").read_text(), (out / "report.html").read_text()
    assert md.index("## Setup") < md.index("## Main comparison")
    for line in (
        "| Generator | scripted |",
        "| Base model | model |",
        "| Training (every cell) | 2 optimizer steps, global batch 4, learning rate 0.001,",
        "| Questions | questions.jsonl: 3 questions (judged); math.jsonl: 2 problems (graded) |",
        "| Judge | scripted-judge, text verdicts,",
    ):
        assert line in md, line
    assert "<td>scripted-judge, text verdicts" in html and html.index("Setup") < html.index("Main comparison")
    assert study["result"]["setup"]["Generator"] == "scripted"
    tables = [block for block in md.split("## ")[2:] if block.lstrip().count("|") and not block.startswith("Data")]
    assert len(tables) == 4 and all("| Examples |" in t for t in tables), tables
    assert "train loss" not in md.lower() and "train loss" not in html.lower()


def test_a_short_cell_is_flagged_not_ok(study: dict[str, Any], tmp_path: Path) -> None:
    """K = 0 of the explored tree is the root alone: fewer examples than asked, marked short everywhere."""
    spec, out = _copy_with_axis(study, tmp_path, 0, "depth", [1, 2, 0])
    _plan, _states, result = run_experiment(spec, out, resume=True, backends=backends(), only=["explore-depth0"])
    row = next(r for r in result["cells"] if r["cell"] == "explore-depth0")
    assert row["examples"] < row["requested"] and row["status"] == "short", row
    note = f"| explore (short) | 0 | {row['examples']} of {row['requested']} |"
    assert note in (out / "results.md").read_text()
    assert (
        next(r for r in csv.DictReader((out / "results.csv").open()) if r["cell"] == "explore-depth0")["status"]
        == "short"
    )


def test_an_empty_beat_rate_plot_says_why() -> None:
    from explore_instruct.experiment.results import no_points_reason

    tied = {"win": 0, "tie": 4, "lose": 0, "unparsed": 0, "failed": 0}
    rows = [{"comparisons": {"base": tied}}, {"comparisons": {"base": tied}}, {"comparisons": {}}]
    assert no_points_reason(rows, ["base"]) == "no decisive judgement: all 8 pairs tied"
    rows[0]["comparisons"]["base"] = {**tied, "tie": 3, "unparsed": 1}
    assert no_points_reason(rows, ["base"]) == "no decisive judgement: 7 of 8 pairs tied, 1 without a verdict"
    assert no_points_reason([{"comparisons": {}}], ["base"]) == "no comparison judged yet"


def _last_loss(path: Path) -> float:
    return [json.loads(x)["loss"] for x in path.read_text().splitlines() if '"loss"' in x][-1]


def test_every_number_equals_the_one_in_its_output_file(study: dict[str, Any]) -> None:
    out = study["out"]
    checked = 0
    for row in study["result"]["cells"]:
        src = row["sources"]
        assert len(read_records(out / src["examples"])[0]) == row["examples"]
        summary = json.loads((out / src["unique_verb_noun_pairs"]).read_text())["datasets"]["data"]
        assert summary["verb_noun"]["unique_pairs"] == row["unique_verb_noun_pairs"]
        assert summary["seed_overlap"]["mean"] == row["rouge_l_to_seeds"]
        assert _last_loss(out / src["final_train_loss"]) == row["final_train_loss"]
        math_summary = json.loads((out / src["math_accuracy"]).read_text())
        assert math_summary["overall"]["accuracy"] == row["math_accuracy"]
        for label, numbers in row["comparisons"].items():
            judged = json.loads((out / src[f"vs {label}"]).read_text())
            overall = next(s for s in judged["summary"] if s["cls"] == "overall")
            assert {k: overall[k] for k in numbers} == numbers
            checked += 1
    assert checked == 6  # every cell but the baseline itself is compared with it


def test_size_cells_nest_and_shared_data_trains_once(study: dict[str, Any]) -> None:
    out, cells = study["out"], {r["cell"]: r for r in study["result"]["cells"]}
    small = read_records(out / cells["explore-size4"]["sources"]["examples"])[0]
    large = read_records(out / cells["explore-size8"]["sources"]["examples"])[0]
    assert (len(small), len(large)) == (4, 8) and large[:4] == small
    # K = 2 is the whole tree and the filter dropped nothing from the fake data: three cells, one dataset.
    same = [cells[c]["sources"]["examples"] for c in ("explore", "explore-depth2", "explore-filter-off")]
    assert len({(out / p).read_bytes() for p in same}) == 1
    states = study["states"]
    trained = {states[f"train:{c}"].key for c in cells}
    assert training_runs(out) == len(trained) < len(cells)
    assert sorted(
        s.status for c in ("explore", "explore-depth2", "explore-filter-off") for s in [states[f"train:{c}"]]
    ) == [
        "cached",
        "cached",
        "done",
    ]


def test_resume_of_a_finished_study_redoes_nothing(study: dict[str, Any], tmp_path: Path) -> None:
    spec, out = _copy(study, tmp_path)
    ran_before = len(_events(out, "ran"))
    _plan, states, result = run_experiment(spec, out, resume=True, backends=backends())
    assert all(s.status == "cached" for s in states.values())
    assert len(_events(out, "ran")) == ran_before
    assert result["cells"] == json.loads((study["out"] / "results.json").read_text())["cells"]


def test_editing_one_axis_recomputes_only_its_cells(study: dict[str, Any], tmp_path: Path) -> None:
    spec, out = _copy(study, tmp_path)
    data = yaml.safe_load(spec.read_text())
    data["axes"][1]["size"] = [4, 8, 6]
    spec.write_text(yaml.safe_dump(data, sort_keys=False))
    before = training_runs(out)
    judge = ScriptedLLM(judge_reply)
    _plan, states, result = run_experiment(spec, out, resume=True, backends=backends(judge))
    assert training_runs(out) == before + 1
    ran = {s.step.id for s in states.values() if s.status == "done"}
    assert ran == {
        "data:explore-size6",
        "analysis:explore-size6",
        "train:explore-size6",
        "answer:explore-size6:0",
        "answer-math:explore-size6",
        "math:explore-size6",
        "judge:explore-size6:vs:self_instruct:0",
    }
    # Only the new cell's pairs, both orders; a pair whose two answers are equal asks one request for
    # both orders (identical requests are sent once), so the count may fall below 2 per question.
    assert len(QUESTIONS) <= len(judge.requests) <= 2 * len(QUESTIONS)
    assert len({r.key("judge") for r in judge.requests}) == len(judge.requests)
    six = next(r for r in result["cells"] if r["cell"] == "explore-size6")
    assert six["status"] == "ok" and six["examples"] == 6


def test_a_size_larger_than_the_pool_is_reported_not_shrunk(study: dict[str, Any], tmp_path: Path) -> None:
    spec, out = _copy_with_axis(study, tmp_path, 1, "size", [4, 8, 100000])
    _plan, states, result = run_experiment(spec, out, resume=True, backends=backends(), only=["explore-size100000"])
    assert states["data:explore-size100000"].status == "failed"
    assert "larger than the pool" in (states["data:explore-size100000"].reason or "")
    row = next(r for r in result["cells"] if r["cell"] == "explore-size100000")
    assert row["status"] == "failed" and row["examples"] is None
    assert "larger than the pool" in (out / "results.md").read_text()


# --- faults ---------------------------------------------------------------------------------------


class Killed(BaseException):
    """Stands for SIGKILL: nothing catches it, nothing after it runs."""


KINDS = ("generate", "data", "analysis", "train", "answer", "judge", "math")


def test_kill_and_resume_at_each_step_kind(tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Kill the study inside a step of each kind in turn (after the step did its work, before it was
    committed), resume each time: every step finishes exactly once, and the results are complete."""
    spec = write_study(tmp_path / "spec", tiny_model, axes=[], runner={"llm_workers": 1})
    out = tmp_path / "out"
    real = dict(steps_module.EXECUTORS)
    killed: list[str] = []

    def dying(step, ctx):  # type: ignore[no-untyped-def]
        real[step.kind](step, ctx)  # the work is done (and written into the partial folder) ...
        killed.append(step.kind)
        raise Killed  # ... and the process dies before the step is committed

    # Every kind not killed yet dies on its first step; steps run concurrently, so which kind dies first
    # in a run depends on timing, but no step of a kind can finish before that kind has been killed once.
    for _attempt in range(2 * len(KINDS)):
        if set(killed) == set(KINDS):
            break
        for kind in KINDS:
            monkeypatch.setitem(steps_module.EXECUTORS, kind, real[kind] if kind in killed else dying)
        with pytest.raises(Killed):
            run_experiment(spec, out, resume=True, backends=backends())
    for kind in KINDS:
        monkeypatch.setitem(steps_module.EXECUTORS, kind, real[kind])
    assert set(killed) == set(KINDS)
    _plan, _states, result = run_experiment(spec, out, resume=True, backends=backends())
    assert all(r["status"] == "ok" for r in result["cells"])
    ran = [e.key for e in _events(out, "ran")]
    assert len(ran) == len(set(ran)), "a finished step ran twice"
    assert not list((out / "artefacts").glob("*/.*.partial"))


def test_a_step_renamed_but_not_recorded_is_adopted(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = write_study(tmp_path / "spec", tiny_model, axes=[], evaluate={"baselines": [], "questions": []})
    out = tmp_path / "out"
    real_add = ExperimentDB.add_artefact

    def dying_add(self, key, kind, *args):  # type: ignore[no-untyped-def]
        if kind == "train":
            raise Killed  # the model folder is in place, the database write never happens
        return real_add(self, key, kind, *args)

    monkeypatch.setattr(ExperimentDB, "add_artefact", dying_add)
    with pytest.raises(Killed):
        run_experiment(spec, out, backends=backends())
    monkeypatch.setattr(ExperimentDB, "add_artefact", real_add)
    _plan, states, _result = run_experiment(spec, out, resume=True, backends=backends())
    trains = [s for s in states.values() if s.step.kind == "train"]
    assert trains and all(s.status in ("cached", "done") for s in trains)
    assert any(s.status == "cached" for s in trains)  # the killed one was adopted, not trained again


def test_a_diverged_training_fails_its_cell_and_reports_no_numbers(tiny_model: Path, tmp_path: Path) -> None:
    """lr 1e30 turns the loss NaN from step 2: the train step fails with the `train` command's one line,
    no model folder is left, answers and judging never run, and the tables hold no number of it."""
    spec = write_study(
        tmp_path / "spec",
        tiny_model,
        axes=[],
        train={"learning_rate": 1e30, "max_steps": 4},
        evaluate={"math_questions": None},
        analysis={"enabled": False},
    )
    out = tmp_path / "out"
    _plan, states, result = run_experiment(spec, out, backends=backends(), only=["explore", "self_instruct"])
    for cell in ("explore", "self_instruct"):
        train = states[f"train:{cell}"]
        assert train.status == "failed" and (train.reason or "").startswith("training diverged at step "), train.reason
        assert states[f"data:{cell}"].status == "done"  # the steps before it are kept
    assert states["answer:explore:0"].status == "blocked"
    assert states[judge_id("explore", "self_instruct", 0)].status == "blocked"
    left = [p.name for p in (out / "artefacts").glob("train/*/*")]
    assert left == [], "a diverged run left something of its model"
    rows = {r["cell"]: r for r in result["cells"]}
    assert rows["explore"]["status"] == "failed"
    assert rows["explore"]["final_train_loss"] is None and rows["explore"]["comparisons"] == {}
    assert any("training diverged at step" in p for p in rows["explore"]["problems"])
    table = (out / "results.md").read_text()
    header = next(x for x in table.splitlines() if x.startswith("| Cell |")).split("|")
    line = next(x for x in table.splitlines() if x.startswith("| explore (failed) |")).split("|")
    wtl = next(i for i, h in enumerate(header) if "W:T:L" in h)
    assert line[wtl].strip() == "–" and not any(c.strip().startswith("0:") for c in line)  # no W:T:L


def test_training_and_answering_run_in_child_processes(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cell's model is trained and answers are generated in child processes, so this process never
    holds a model: here the in-process functions refuse to run, and the cell still finishes."""
    from explore_instruct.evaluate import answer
    from explore_instruct.train import sft

    def not_here(*_args: Any, **_kwargs: Any) -> None:
        raise AssertionError("ran in the experiment's own process")

    monkeypatch.setattr(sft, "train", not_here)
    monkeypatch.setattr(answer, "answer_with_local_model", not_here)
    spec = write_study(
        tmp_path / "spec",
        tiny_model,
        axes=[],
        evaluate={"baselines": [], "math_questions": None},
        analysis={"enabled": False},
    )
    _plan, states, result = run_experiment(spec, tmp_path / "out", backends=backends(), only=["explore"])
    assert result["cells"][0]["status"] == "ok", result["cells"][0]["problems"]
    for step_id in ("train:explore", "answer:explore:0"):
        assert states[step_id].status == "done"
        assert states[step_id].info["peak_rss_gib"] > 0  # the child's own peak, read when it was reaped


def test_a_failing_judge_is_recorded_and_resumes_without_repaying(study: dict[str, Any], tmp_path: Path) -> None:
    spec, out = _copy(study, tmp_path)
    shutil.rmtree(out / "artefacts" / "judge")
    for cache in (out / "cache").glob("judge-*.sqlite*"):
        cache.unlink()
    calls = {"n": 0}

    def flaky(request):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        return TransientLLMError("503 from the judge") if calls["n"] % 4 == 0 else judge_reply(request)

    first = ScriptedLLM(flaky)
    _plan, states, _result = run_experiment(spec, out, resume=True, backends=backends(first))
    failed = [s for s in states.values() if s.step.kind == "judge" and s.status == "failed"]
    assert failed and all("not judged" in (s.reason or "") for s in failed)
    # What each comparison's call cache holds: the calls that got a reply, and those that never did.
    unanswered: list[str] = []
    for cache in (out / "cache").glob("judge-*.sqlite"):
        with sqlite3.connect(cache) as conn:
            rows = conn.execute("SELECT key, status FROM llm_calls").fetchall()
        ok = {k for k, status in rows if status == "ok"}
        unanswered += sorted({k for k, status in rows if status == "failed"} - ok)
    assert unanswered
    second = ScriptedLLM(judge_reply)
    _plan, states, result = run_experiment(spec, out, resume=True, backends=backends(second))
    assert all(s.status in ("done", "cached") for s in states.values())
    # Only the calls that never got a reply are sent again, each once per comparison.
    assert sorted(r.key(second.model_id) for r in second.requests) == sorted(unanswered)
    assert result["cells"] == json.loads((study["out"] / "results.json").read_text())["cells"]


def test_delete_weights_keeps_logs_and_retrains_only_for_new_answers(tiny_model: Path, tmp_path: Path) -> None:
    spec = write_study(tmp_path / "spec", tiny_model, axes=[], runner={"delete_weights": True})
    out = tmp_path / "out"
    _plan, states, result = run_experiment(spec, out, backends=backends())
    assert all(r["status"] == "ok" for r in result["cells"])
    for s in states.values():
        if s.step.kind == "train":
            model = s.path / "model"  # type: ignore[operator]
            assert sorted(p.name for p in model.iterdir()) == ["train_log.jsonl", "train_settings.json"]
    assert training_runs(out) == 2
    _plan, states, _result = run_experiment(spec, out, resume=True, backends=backends())
    assert training_runs(out) == 2  # every answer exists: the deleted weights are not missed
    # A second question file needs the models again: they are trained again, then deleted again.
    (spec.parent / "more.jsonl").write_text(json.dumps({"question_id": "x1", "question": "Say hello."}) + "\n")
    data = yaml.safe_load(spec.read_text())
    data["evaluate"]["questions"].append("more.jsonl")
    spec.write_text(yaml.safe_dump(data, sort_keys=False))
    _plan, states, result = run_experiment(spec, out, resume=True, backends=backends())
    assert training_runs(out) == 4 and all(r["status"] == "ok" for r in result["cells"])
    assert states["answer:explore:1"].status == "done" and states["answer:explore:0"].status == "cached"


# --- the spec and the command line ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"run": "missing.yaml"}, "run: "),
        ({"axes": [{"dataset": "nope", "size": [4]}]}, "unknown dataset 'nope'"),
        ({"axes": [{"dataset": "explore", "size": []}]}, "the size axis is empty"),
        ({"evaluate": {"baselines": ["nope"]}}, "evaluate.baselines.0: 'nope' is not a cell"),
        ({"datasets": {"x": {"kind": "file", "path": "none.json"}}}, "datasets.x.path"),
        ({"train": {"lr": 1}}, "train.lr"),
    ],
)
def test_bad_spec_is_one_line_exit_2_nothing_started(
    tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], change: dict[str, Any], message: str
) -> None:
    spec = write_study(tmp_path / "spec", tiny_model)
    data = yaml.safe_load(spec.read_text())
    for key, value in change.items():
        if key == "datasets":
            continue
        data[key] = {**data[key], **value} if isinstance(value, dict) and key != "datasets" else value
    if "datasets" in change:
        data["datasets"] = {**data["datasets"], **change["datasets"]}
    spec.write_text(yaml.safe_dump(data, sort_keys=False))
    out = tmp_path / "out"
    assert main(["experiment", str(spec), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and str(spec) in err and len(err.splitlines()) == 1, err
    assert not out.exists()


def test_dry_run_lists_steps_and_estimate_then_reuse(study: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    from explore_instruct.experiment.preview import preview

    assert main(["experiment", str(study["spec"]), "--out", str(study["out"]), "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "reuse" in text and "train:explore-size4" in text and "0 LLM calls" in text
    p = preview(study["plan"], study["out"])
    assert {action for _cell, _step, action in p.rows} == {"reuse"} and p.trainings == 0


def test_dry_run_of_a_new_study_estimates_work(
    tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = write_study(tmp_path / "spec", tiny_model)
    assert main(["experiment", str(spec), "--out", str(tmp_path / "out"), "--dry-run"]) == 0
    text = capsys.readouterr().out
    plan = load_plan(spec)
    assert "7 cells" in text and all(c.name in text for c in plan.cells)
    judges = sum(1 for s in plan.steps.values() if s.kind == "judge")
    assert judges == 6 and "LLM calls" in text and "training runs" in text
    assert not (tmp_path / "out").exists()


def test_existing_folder_needs_resume(study: dict[str, Any]) -> None:
    # The library names the setting; the command line prints it as --resume.
    with pytest.raises(UserError, match="pass resume to continue it") as refused:
        run_experiment(study["spec"], study["out"], backends=backends())
    assert refused.value.settings == ("resume",)


@pytest.mark.parametrize("preset", sorted((REPO / "configs" / "experiments").glob("*.yaml")), ids=lambda p: p.stem)
def test_presets_validate_with_dry_run(
    preset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-preset-check")  # the paper presets name it; its absence is refused
    assert main(["experiment", str(preset), "--out", str(tmp_path / "out"), "--dry-run"]) == 0
    assert "estimate" in capsys.readouterr().out
    assert len(load_plan(preset, strict=False).cells) >= 2


_CHILD = """
import sys
from pathlib import Path
from explore_instruct.experiment import run_experiment
from tests.test_experiment_helpers import backends

if __name__ == "__main__":
    run_experiment(Path(sys.argv[1]), Path(sys.argv[2]), resume=True, backends=backends())
"""


def test_sigkill_mid_study_then_resume(tiny_model: Path, tmp_path: Path) -> None:
    """A real SIGKILL once the first model is trained; the resumed study redoes no finished step."""
    import os
    import signal
    import subprocess
    import sys
    import time

    spec = write_study(
        tmp_path / "spec",
        tiny_model,
        axes=[{"dataset": "explore", "size": [4]}],
        evaluate={"math_questions": None},
        analysis={"enabled": False},
    )
    out = tmp_path / "out"
    script = tmp_path / "child.py"
    script.write_text(_CHILD)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])}
    child = subprocess.Popen([sys.executable, str(script), str(spec), str(out)], env=env, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and child.poll() is None:
            if (out / DB_FILE).exists() and any(e.step_id.startswith("train:") for e in _events(out, "ran")):
                break
            time.sleep(0.2)
        assert child.poll() is None, "the study finished before it could be killed"
        child.send_signal(signal.SIGKILL)
        child.wait()
    finally:
        if child.poll() is None:
            child.kill()
    ran_before = {e.key for e in _events(out, "ran")}
    _plan, states, result = run_experiment(spec, out, resume=True, backends=backends())
    assert all(r["status"] == "ok" for r in result["cells"])
    ran = [e.key for e in _events(out, "ran")]
    assert len(ran) == len(set(ran)), "a finished step ran twice"
    assert ran_before and all(states[s].status == "cached" for s in states if states[s].key in ran_before)


def test_training_through_a_launcher_command(tiny_model: Path, tmp_path: Path) -> None:
    """`train.launcher` runs `LAUNCHER -m explore_instruct train --flags`: here the plain interpreter."""
    import shlex
    import sys

    spec = write_study(
        tmp_path / "spec",
        tiny_model,
        axes=[],
        train={"launcher": shlex.quote(sys.executable), "lora": False, "seed": 5},
        evaluate={"questions": [], "baselines": [], "math_questions": None},
        analysis={"enabled": False},
    )
    _plan, states, result = run_experiment(spec, tmp_path / "out", backends=backends(), only=["explore"])
    train = states["train:explore"]
    assert train.status == "done", train.reason
    settings = json.loads((train.path / "model" / "train_settings.json").read_text())  # type: ignore[operator]
    assert settings["config"]["seed"] == 5 and settings["config"]["max_steps"] == 2
    assert result["cells"][0]["final_train_loss"] == _last_loss(train.path / "model" / "train_log.jsonl")  # type: ignore[operator]


def test_human_curated_and_file_datasets(tiny_model: Path, tmp_path: Path) -> None:
    """A SuperNI folder and an Alpaca file are datasets too; a size axis nests over a file's records."""
    tasks = tmp_path / "superni" / "tasks"
    tasks.mkdir(parents=True)
    task = {
        "Definition": ["Paraphrase the sentence."],
        "Categories": ["Paraphrasing"],
        "Instances": [{"input": f"Sentence number {i}.", "output": [f"Number {i} sentence."]} for i in range(12)],
    }
    (tasks / "task001_paraphrase.json").write_text(json.dumps(task))
    records = [{"instruction": f"Say {w}.", "input": "", "output": w} for w in ("one", "two", "three", "four", "five")]
    (tmp_path / "alpaca.json").write_text(json.dumps(records))
    spec = write_study(
        tmp_path / "spec",
        tiny_model,
        datasets={
            "superni": {"kind": "human_curated", "superni": "../superni", "categories": ["Paraphrasing"], "size": 8},
            "mine": {"kind": "file", "path": "../alpaca.json"},
        },
        axes=[{"dataset": "mine", "size": [2, 4]}],
        evaluate={"questions": [], "baselines": [], "math_questions": None},
        analysis={"enabled": False},
    )
    only = ["superni", "mine", "mine-size2", "mine-size4"]
    _plan, states, result = run_experiment(spec, tmp_path / "out", backends=backends(), only=only)
    rows = {r["cell"]: r for r in result["cells"] if r["cell"] in only}
    assert all(r["status"] == "ok" for r in rows.values()), [r["problems"] for r in rows.values()]
    superni = read_records(tmp_path / "out" / rows["superni"]["sources"]["examples"])[0]
    assert len(superni) == 8 and all(r["instruction"] == "Paraphrase the sentence." for r in superni)
    two, four = (
        read_records(tmp_path / "out" / rows[c]["sources"]["examples"])[0] for c in ("mine-size2", "mine-size4")
    )
    assert four[:2] == two and {r["output"] for r in four} <= {r["output"] for r in records}
    assert rows["mine"]["examples"] == 5
    assert not any(s.step.kind == "generate" and s.status == "done" for s in states.values())


def test_human_curated_without_categories_for_a_generic_run(tiny_model: Path, tmp_path: Path) -> None:
    (tmp_path / "superni" / "tasks").mkdir(parents=True)
    spec = write_study(
        tmp_path / "spec", tiny_model, datasets={"superni": {"kind": "human_curated", "superni": "../superni"}}
    )
    with pytest.raises(UserError, match=r"datasets\.superni\.categories"):
        load_plan(spec)


def test_cli_resume_of_a_finished_study(
    study: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The command itself (live table, summary, results table on stdout); everything is reused."""
    spec, out = _copy(study, tmp_path)
    assert main(["experiment", str(spec), "--out", str(out), "--resume"]) == 0
    captured = capsys.readouterr()
    assert "## Main comparison" in captured.out and "| explore |" in captured.out
    assert "0 steps ran" in captured.err and "0 failed" in captured.err
    # Off a terminal: results.md exactly as written (no line folded at 80 columns), a line per step.
    assert (out / "results.md").read_text(encoding="utf-8").strip() in captured.out
    assert re.search(r"^experiment 1/\d+: \S+ \(\S+\) cached$", captured.err, re.MULTILINE), captured.err
    assert main(["experiment", str(spec), "--out", str(out)]) == 2  # an existing folder needs --resume
