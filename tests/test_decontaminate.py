"""Decontamination: the library, the `decontaminate` command on record files, and the run stage."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from explore_instruct.cli import main
from explore_instruct.datafile import read_records
from explore_instruct.decontaminate import build_index, decontaminate_file, words
from explore_instruct.evaluate.questions import read_questions
from explore_instruct.tree import load_upstream
from tests.helpers import make_config, run_fake


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def disguise(text: str, rng: random.Random) -> str:
    """The same words with their case flipped at random and the punctuation changed."""
    out = []
    for word in text.split():
        word = word.strip(".,?!:;\"'")
        word = word.upper() if rng.random() < 0.5 else word.lower()
        out.append(word + rng.choice(["", "", ",", ";", " -", "..."]))
    return "«" + " ".join(out) + "!?»"


def test_words_lower_case_and_strip_punctuation_of_any_script() -> None:
    assert words("What's THE capital—of France?!") == ["what", "s", "the", "capital", "of", "france"]
    assert words("Ça va, «mon ami»？") == ["ça", "va", "mon", "ami"]


def test_exactly_the_planted_copies_of_evaluation_questions_are_removed(
    tmp_path: Path, fixtures_dir: Path, upstream_tree: Path
) -> None:
    questions_file = fixtures_dir / "eval_questions" / "open_ended_sample.jsonl"
    math_file = fixtures_dir / "eval_questions" / "math_sample.jsonl"
    real = [ex for node, *_ in load_upstream(upstream_tree).level_order() for ex in node.examples]
    assert len(real) >= 95
    rng = random.Random(3)
    records = [{"instruction": e.instruction, "input": e.input, "output": e.output} for e in real[:95]]
    # Five copies: three questions in an instruction, one in an input, one reference solution in an output.
    open_ended, math = read_questions(questions_file), read_questions(math_file)
    planted = [
        {"instruction": disguise(open_ended[0].question, rng), "input": "", "output": "Some ideas."},
        {"instruction": "Answer this: " + disguise(open_ended[4].question, rng), "input": "", "output": "Ok."},
        {"instruction": disguise(math[2].question, rng), "input": "", "output": "It is 4."},
        {"instruction": "Solve the problem below.", "input": disguise(math[5].question, rng), "output": "7"},
        {"instruction": "Explain the steps.", "input": "", "output": disguise(math[7].std_answer, rng)},
    ]
    positions = sorted(rng.sample(range(100), 5))
    for pos, rec in zip(positions, planted, strict=True):
        records.insert(pos, rec)
    src = write_jsonl(tmp_path / "records.jsonl", records)
    out = tmp_path / "clean.jsonl"

    result = decontaminate_file(src, [questions_file, math_file], out)

    clean, _ = read_records(out)
    assert (result.total, result.kept) == (100, 95)
    assert result.removed == {str(questions_file): 2, str(math_file): 3}
    assert clean == [r for i, r in enumerate(records) if i not in positions]


def test_a_question_shorter_than_n_words_matches_as_a_whole_a_short_answer_never(tmp_path: Path) -> None:
    qs = write_jsonl(
        tmp_path / "q.jsonl",
        [{"question": "Give a short advice on healthy eating.", "std_answer": "Eat vegetables.", "question_id": "q1"}],
    )
    index = build_index([qs], ngram=13)
    assert index.match(["Please GIVE a short advice, on healthy-eating today"]).question_id == "q1"
    assert index.match(["Give a short advice on eating"]) is None
    assert index.match(["You should eat vegetables."]) is None  # the answer is under 13 words


def test_ngram_of_a_long_answer_matches_and_a_shorter_overlap_does_not(tmp_path: Path) -> None:
    answer = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen"
    qs = write_jsonl(tmp_path / "q.json", [{"question": "Count.", "std_answer": answer, "question_id": 7}])
    index = build_index([qs], ngram=13)
    assert index.match(["x Two Three four five six seven eight nine ten eleven twelve thirteen fourteen y"])
    assert index.match(["three four five six seven eight nine ten eleven twelve thirteen fourteen"]) is None


def test_command_prints_removed_per_question_file_and_writes_clean_records(tmp_path: Path, capsys) -> None:
    q1 = write_jsonl(tmp_path / "q1.jsonl", [{"question": "Name three colours of the rainbow.", "question_id": "a"}])
    q2 = write_jsonl(tmp_path / "q2.jsonl", [{"question": "Which planet is the largest one?", "question_id": "b"}])
    records = [
        {"instruction": "name THREE colours, of the rainbow", "output": "red"},
        {"instruction": "Write a poem about autumn leaves.", "input": "", "output": "..."},
    ]
    src = tmp_path / "in.json"
    src.write_text(json.dumps(records), encoding="utf-8")
    out = tmp_path / "out.json"
    assert main(["decontaminate", str(src), "--against", str(q1), "--against", str(q2), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"{q1}: removed 1" in printed and f"{q2}: removed 0" in printed
    assert json.loads(out.read_text()) == records[1:]


@pytest.mark.parametrize(
    ("which", "content", "message"),
    [
        ("questions", "{not json", "q.jsonl"),
        ("questions", '{"question": "Hi there"}\n', "question_id"),
        ("records", '[{"input": "no instruction"}]', "instruction"),
        ("records", "[1, 2]", "in.json"),
    ],
)
def test_bad_files_exit_2_with_one_line_and_write_nothing(tmp_path, capsys, which, content, message) -> None:
    qs = tmp_path / "q.jsonl"
    src = tmp_path / "in.json"
    qs.write_text('{"question": "Hello world", "question_id": "1"}\n')
    src.write_text('[{"instruction": "Say hello"}]')
    (qs if which == "questions" else src).write_text(content)
    out = tmp_path / "out.json"
    assert main(["decontaminate", str(src), "--against", str(qs), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
    assert not out.exists()


def test_command_refuses_a_bad_ngram_and_a_missing_question_file(tmp_path: Path, capsys) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", [{"instruction": "Say hello"}])
    qs = write_jsonl(tmp_path / "q.jsonl", [{"question": "Hello world", "question_id": "1"}])
    assert main(["decontaminate", str(src), "--against", str(qs), "--ngram", "0", "-o", str(tmp_path / "o")]) == 2
    assert "--ngram" in capsys.readouterr().err
    missing = tmp_path / "nope.jsonl"
    assert main(["decontaminate", str(src), "--against", str(missing), "-o", str(tmp_path / "o")]) == 2
    assert "nope.jsonl" in capsys.readouterr().err
    assert main(["decontaminate", str(src), "-o", str(tmp_path / "o")]) == 2  # --against is required
    assert not (tmp_path / "o").exists()


def test_run_stage_drops_copies_with_the_question_id_and_a_rerun_decides_the_same(tmp_path: Path) -> None:
    ctx, _, _ = run_fake(tmp_path / "plain")
    kept = ctx.store.dataset("kept")
    ctx.store.close()
    victim = kept[3]
    qs = write_jsonl(
        tmp_path / "eval.jsonl", [{"question": victim["instruction"].upper() + "?", "question_id": "leak-1"}]
    )
    config = make_config(decontaminate={"against": [str(qs)], "ngram": 5})
    ctx, results, _ = run_fake(tmp_path / "run", config)
    dropped = [r for r in ctx.store.dataset("dropped") if r["drop_stage"] == "decontaminate"]
    assert results.decontaminate.removed == len(dropped) >= 1
    assert all("leak-1" in r["drop_reason"] for r in dropped)
    assert victim["instruction"] in {r["instruction"] for r in dropped}
    first = ctx.store.dataset("all")
    ctx.store.close()
    ctx, _, backend = run_fake(tmp_path / "run", config)
    assert ctx.store.dataset("all") == first and backend.requests == []
    ctx.store.close()


def test_experiment_decontaminates_each_dataset_against_its_questions_and_reports_the_count(tmp_path: Path) -> None:
    pytest.importorskip("trl")
    from explore_instruct.experiment import run_experiment
    from explore_instruct.train.tiny import build_tiny_llama
    from tests.test_experiment_helpers import QUESTIONS, backends, write_study

    tiny_model = build_tiny_llama(tmp_path / "model", [q["question"] for q in QUESTIONS] + ["Say one two three"])

    records = [{"instruction": f"Say {w} twice.", "input": "", "output": f"{w} {w}"} for w in ("one", "two", "three")]
    records.insert(
        1, {"instruction": "REWRITE this in plain words - the meeting is postponed", "input": "", "output": "x"}
    )
    records.append({"instruction": "Solve it.", "input": "what is 2 + 3", "output": "5"})  # a math question
    (tmp_path / "mine.json").write_text(json.dumps(records))
    spec = write_study(
        tmp_path / "spec",
        tiny_model,
        datasets={"mine": {"kind": "file", "path": "../mine.json"}},
        axes=[],
        evaluate={"baselines": []},
        analysis={"enabled": False},
    )
    _plan, _states, result = run_experiment(spec, tmp_path / "out", backends=backends(), only=["mine"])
    row = next(r for r in result["cells"] if r["cell"] == "mine")
    assert (row["examples"], row["decontaminated"]) == (3, 2)
    trained_on, _ = read_records(tmp_path / "out" / row["sources"]["examples"])
    clean = [r for r in records if r["output"] not in ("x", "5")]
    assert sorted(trained_on, key=str) == sorted(clean, key=str)  # a file dataset is drawn in a seeded order
    csv_rows = (tmp_path / "out" / "results.csv").read_text().splitlines()
    assert "decontaminated" in csv_rows[0].split(",")
    assert "Removed as contaminated" in (tmp_path / "out" / "results.md").read_text()


def test_the_experiment_generation_key_ignores_the_controls_after_the_filter() -> None:
    """An existing study's generated runs keep their keys (and are not generated again)."""
    from explore_instruct.experiment.plan import _generation_params

    plain = _generation_params(make_config())
    assert "decontaminate" not in plain and "rate" not in plain
    assert plain == _generation_params(make_config(rate={"enabled": True}, decontaminate={"ngram": 8}))


def test_a_run_refuses_a_missing_or_bad_question_file_before_it_starts(tmp_path: Path, capsys) -> None:
    import yaml

    from tests.helpers import BASE, merge

    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(merge(BASE, {"decontaminate": {"against": ["eval.jsonl"]}})))
    assert main(["run", str(config), "--run-dir", str(tmp_path / "run")]) == 2
    assert "decontaminate.against[0]" in capsys.readouterr().err
    (tmp_path / "eval.jsonl").write_text('{"question": "no id"}\n')  # relative to the config file
    assert main(["run", str(config), "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert "eval.jsonl" in err and "question_id" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "run").exists()
