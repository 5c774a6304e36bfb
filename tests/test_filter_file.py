"""`explore-instruct filter-file`: formats, order, groups, explanations, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from explore_instruct.cli import main

RECORDS = [
    {"instruction": "Rewrite the following sentence in a formal tone.", "input": "hey", "task": "style"},
    {"instruction": "Rewrite the following sentence in a formal tone!", "input": "yo", "task": "style"},
    {"instruction": "Summarize the paragraph below.", "input": "", "task": "summary"},
    {"instruction": "Rewrite the sentence below in a formal tone.", "input": "", "task": "other"},
    {"instruction": "Fix the spelling mistakes.", "input": "teh", "task": "summary"},
]


def write_json(path: Path, records) -> Path:
    path.write_text(json.dumps(records, indent=2), encoding="utf-8")
    return path


def write_jsonl(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def read_any(path: Path):
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        return json.loads(text), "json"
    return [json.loads(line) for line in text.splitlines() if line.strip()], "jsonl"


def test_json_list_global_scope(tmp_path, capsys):
    out = tmp_path / "out.json"
    rc = main(["filter-file", str(write_json(tmp_path / "in.json", RECORDS)), "--out", str(out)])
    assert rc == 0
    kept, fmt = read_any(out)
    assert fmt == "json"
    assert kept == [RECORDS[0], RECORDS[2], RECORDS[4]]  # input order, whole records
    summary = capsys.readouterr().out
    assert "kept 3 / 5 (60.0 %)" in summary
    assert " s " in summary


def test_jsonl_detected_from_content_and_kept_as_jsonl(tmp_path):
    src = write_jsonl(tmp_path / "in.data", RECORDS)
    out = tmp_path / "out.data"
    assert main(["filter-file", str(src), "--out", str(out)]) == 0
    kept, fmt = read_any(out)
    assert fmt == "jsonl"
    assert kept == [RECORDS[0], RECORDS[2], RECORDS[4]]


def test_output_format_follows_the_out_suffix(tmp_path):
    src = write_json(tmp_path / "in.json", RECORDS)
    out = tmp_path / "out.jsonl"
    assert main(["filter-file", str(src), "--out", str(out)]) == 0
    assert read_any(out)[1] == "jsonl"


def test_group_field_threshold_and_explain(tmp_path):
    src = write_json(tmp_path / "in.json", RECORDS)
    out, explain = tmp_path / "out.json", tmp_path / "dropped.jsonl"
    rc = main(["filter-file", str(src), "--out", str(out), "--group-field", "task", "--explain", str(explain)])
    assert rc == 0
    kept, _ = read_any(out)
    # Record 3 is in another task, so it is no longer compared with record 0.
    assert kept == [RECORDS[0], RECORDS[2], RECORDS[3], RECORDS[4]]
    dropped, _ = read_any(explain)
    assert len(dropped) == 1
    assert dropped[0]["index"] == 1
    assert dropped[0]["dup_of"] == 0
    assert dropped[0]["score"] == 1.0
    assert dropped[0]["group"] == "style"
    assert dropped[0]["dup_text"] == RECORDS[0]["instruction"]

    assert main(["filter-file", str(src), "--out", str(out), "--threshold", "1.0"]) == 0
    assert read_any(out)[0] == RECORDS


def test_other_field_tokenizer_and_stem(tmp_path):
    records = [{"q": "猫がマットに座った"}, {"q": "猫がマットに座っていた"}, {"q": "running dogs"}, {"q": "run dog"}]
    src = write_json(tmp_path / "in.json", records)
    out = tmp_path / "out.json"
    assert main(["filter-file", str(src), "--out", str(out), "--field", "q"]) == 0
    assert read_any(out)[0] == [records[0], records[1], records[2], records[3]]
    args = ["filter-file", str(src), "--out", str(out), "--field", "q", "--tokenizer", "cjk", "--stem"]
    assert main(args) == 0
    assert read_any(out)[0] == [records[0], records[2]]


def test_workers_option(tmp_path):
    src = write_json(tmp_path / "in.json", RECORDS * 3)
    out = tmp_path / "out.json"
    assert main(["filter-file", str(src), "--out", str(out), "--workers", "2"]) == 0
    assert read_any(out)[0] == [RECORDS[0], RECORDS[2], RECORDS[4]]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("this is not json", "not valid JSON"),
        ('[{"instruction": "a"}, {"input": "b"}]', "record 1: missing field 'instruction'"),
        ('[{"instruction": "a"}, {"instruction": 7}]', "record 1: field 'instruction' is a int"),
        ('[{"instruction": "a"}, {"instruction": null}]', "record 1: missing field 'instruction'"),
        ('{"instruction": "a"}\n{"instruction": ["b"]}\n', "record 1: field 'instruction' is a list"),
        ('[{"instruction": "a"}, "b"]', "record 1 is a str"),
        ("", "empty"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_no_output(tmp_path, capsys, content, message):
    src = tmp_path / "in.json"
    src.write_text(content, encoding="utf-8")
    out = tmp_path / "out.json"
    rc = main(["filter-file", str(src), "--out", str(out)])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert message in err
    assert str(src) in err
    assert not out.exists()


def test_missing_group_field_and_bad_options(tmp_path, capsys):
    src = write_json(tmp_path / "in.json", [{"instruction": "a", "task": 1}, {"instruction": "b"}])
    out = tmp_path / "out.json"
    assert main(["filter-file", str(src), "--out", str(out), "--group-field", "task"]) == 2
    assert "record 1 has no group field 'task'" in capsys.readouterr().err
    assert main(["filter-file", str(src), "--out", str(out), "--tokenizer", "spacy"]) == 2
    assert "--tokenizer" in capsys.readouterr().err
    assert main(["filter-file", str(src), "--out", str(out), "--workers", "0"]) == 2
    assert main(["filter-file", str(tmp_path / "missing.json"), "--out", str(out)]) == 2
    assert "no such file" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("threshold", ["-0.1", "1.5", "nan"])
def test_threshold_outside_zero_to_one_is_one_line(tmp_path, capsys, threshold):
    src = write_json(tmp_path / "in.json", RECORDS)
    out = tmp_path / "out.json"
    assert main(["filter-file", str(src), "--out", str(out), "--threshold", threshold]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--threshold must be between 0 and 1" in err
    assert not out.exists()


def test_library_function_is_what_the_command_runs(tmp_path):
    from explore_instruct.filter_file import FilterFileOptions, filter_file

    src = write_jsonl(tmp_path / "in.jsonl", RECORDS)
    calls: list[tuple[int, int]] = []
    result = filter_file(
        src, tmp_path / "out", FilterFileOptions(group_field="task"), progress=lambda *a: calls.append(a)
    )
    assert (result.total, result.kept) == (5, 4)
    kept, fmt = read_any(tmp_path / "out")
    assert fmt == "jsonl"  # no .json/.jsonl suffix: the input's format
    assert kept == [RECORDS[0], RECORDS[2], RECORDS[3], RECORDS[4]]
    assert calls[0] == (0, 5) and calls[-1] == (5, 5)
