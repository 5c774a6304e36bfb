"""The SuperNI sampler on a small directory in Super-NaturalInstructions' task format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from explore_instruct.baselines.human_curated import DEFAULT_CATEGORIES, categories_for, sample_superni
from explore_instruct.cli import main
from explore_instruct.errors import UserError


def task(categories: list[str], n: int, tag: str, *, lang: str = "English", pad: int = 0) -> dict:
    body = {
        "Contributors": ["test"],
        "Source": ["test"],
        "URL": ["https://example.org"],
        "Categories": categories,
        "Reasoning": [],
        "Definition": [f"Definition of {tag}: rewrite the input."],
        "Input_language": [lang],
        "Output_language": [lang],
        "Positive Examples": [{"input": "a", "output": "b", "explanation": "c"}],
        "Negative Examples": [],
        "Instances": [
            {"id": f"{tag}-{i}", "input": f"{tag} input {i}", "output": [f"{tag} out {i}", "alt"]} for i in range(n)
        ],
    }
    if pad:  # push "Categories" past the head the sampler reads first
        body = {"Padding": "x" * pad, **body}
    return body


@pytest.fixture
def superni(tmp_path: Path) -> Path:
    tasks = tmp_path / "natural-instructions" / "tasks"
    tasks.mkdir(parents=True)
    files = {
        "task001_paraphrase.json": task(["Paraphrasing"], 5, "para"),
        "task002_simplify.json": task(["Text Simplification"], 3, "simp", pad=100_000),
        "task003_french_paraphrase.json": task(["Paraphrasing"], 4, "fr", lang="French"),
        "task004_sentiment.json": task(["Sentiment Analysis"], 6, "senti"),
        "task005_math.json": task(["Mathematics"], 2, "math"),
    }
    simp = files["task002_simplify.json"]
    simp["Instances"].append({"id": "simp-empty", "input": "no reference", "output": []})
    for name, body in files.items():
        (tasks / name).write_text(json.dumps(body, indent=1), encoding="utf-8")
    (tasks / "README.md").write_text("not a task")
    return tasks.parent


def test_samples_only_matching_english_tasks(superni: Path):
    records, rep = sample_superni(superni, categories_for("rewriting"), 100)
    assert sorted(rep.tasks_matched) == ["task001_paraphrase", "task002_simplify"]
    assert rep.instances_available == 8 and rep.sampled == 8 and rep.tasks_scanned == 5
    assert {tuple(sorted(r)) for r in records} == {("input", "instruction", "output")}
    by_input = {r["input"]: r for r in records}
    assert by_input["para input 2"] == {
        "instruction": "Definition of para: rewrite the input.",
        "input": "para input 2",
        "output": "para out 2",
    }
    assert "no reference" not in by_input


def test_seeded_and_sized(superni: Path):
    a, _ = sample_superni(superni, ["Paraphrasing", "Text Simplification"], 4, seed=1)
    b, _ = sample_superni(superni / "tasks", ["paraphrasing", "text simplification"], 4, seed=1)
    c, _ = sample_superni(superni, ["Paraphrasing", "Text Simplification"], 4, seed=2)
    assert a == b and len(a) == 4 and a != c


def test_category_override_and_languages(superni: Path):
    senti, rep = sample_superni(superni, categories_for("rewriting", ["Sentiment Analysis"]), 3)
    assert rep.tasks_matched == ["task004_sentiment"] and len(senti) == 3
    _, rep = sample_superni(superni, ["Paraphrasing"], 50, english_only=False)
    assert sorted(rep.tasks_matched) == ["task001_paraphrase", "task003_french_paraphrase"]


def test_defaults_cover_the_paper_domains():
    assert set(DEFAULT_CATEGORIES) == {"rewriting", "brainstorming", "math"}
    assert categories_for("Math") == ("Mathematics",)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda d: categories_for("cooking"), "no default SuperNI categories for domain 'cooking'"),
        (lambda d: sample_superni(d, ["Poem Generation"], 5), "no task matches"),
        (lambda d: sample_superni(d / "missing", ["Paraphrasing"], 5), "not a directory"),
        (lambda d: sample_superni(d, ["Paraphrasing"], 0), "sample_size must be a positive number"),
    ],
)
def test_bad_input(superni: Path, call, message):
    with pytest.raises(UserError, match=message):
        call(superni)


def test_broken_task_file_is_named(superni: Path):
    (superni / "tasks" / "task009_broken.json").write_text('{"Categories": ["Paraphrasing"], "Instances": [', "utf-8")
    with pytest.raises(UserError, match=r"task009_broken\.json: not valid JSON"):
        sample_superni(superni, ["Paraphrasing"], 5)


def test_cli_writes_alpaca_records(superni: Path, tmp_path: Path, capsys):
    out = tmp_path / "human.jsonl"
    rc = main(
        [
            "baseline",
            "human-curated",
            "--superni",
            str(superni),
            "--domain",
            "rewriting",
            "--num",
            "3",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 3 and all(set(r) == {"instruction", "input", "output"} for r in rows)
    assert "3 examples from 2 of 5 tasks" in capsys.readouterr().out

    out_json = tmp_path / "math.json"
    assert (
        main(
            [
                "baseline",
                "human-curated",
                "--superni",
                str(superni),
                "--domain",
                "math",
                "--num",
                "10",
                "--out",
                str(out_json),
            ]
        )
        == 0
    )
    assert len(json.loads(out_json.read_text())) == 2
    assert "only 2 instances available" in capsys.readouterr().err


def test_cli_bad_directory_is_one_line(tmp_path: Path, capsys):
    rc = main(["baseline", "human-curated", "--superni", str(tmp_path), "--out", str(tmp_path / "o.json")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "no task files found" in err and len(err.splitlines()) == 1
