import json
from pathlib import Path

import pytest

from explore_instruct.cli import main
from explore_instruct.errors import UserError
from explore_instruct.tree import load_upstream, save_upstream


def test_fixture_round_trip_is_byte_identical(upstream_tree, tmp_path):
    tree = load_upstream(upstream_tree)
    assert len(tree.root.children) == 8
    assert tree.count_examples() == 4433
    save_upstream(tree, tmp_path / "out")
    for src in sorted(upstream_tree.glob("*.json")):
        assert (tmp_path / "out" / src.name).read_bytes() == src.read_bytes(), src.name


def test_cli_import_then_export_upstream_unchanged(upstream_tree, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(["import-tree", str(upstream_tree), "--run-dir", str(run_dir), "--domain", "rewriting"]) == 0
    out = tmp_path / "exported"
    assert main(["export", "--run-dir", str(run_dir), "--format", "upstream", "--out", str(out)]) == 0
    for src in sorted(upstream_tree.glob("*.json")):
        assert json.loads((out / src.name).read_text()) == json.loads(src.read_text()), src.name
    assert (
        main(
            [
                "export",
                "--run-dir",
                str(run_dir),
                "--format",
                "alpaca",
                "--which",
                "kept",
                "--out",
                str(tmp_path / "a.json"),
            ]
        )
        == 0
    )
    records = json.loads((tmp_path / "a.json").read_text())
    # the root's 2 examples are the seeds, not data
    assert len(records) == 4431 and set(records[0]) == {"instruction", "input", "output"}


def test_malformed_tree_names_file_and_field(tmp_path, capsys):
    d = tmp_path / "tree"
    d.mkdir()
    (d / "tree_meta_info.json").write_text(json.dumps({"task_name": "x", "children": []}))
    with pytest.raises(UserError, match=r"tree_meta_info.json: root: missing field 'raw_task_name'"):
        load_upstream(d)
    (d / "tree_meta_info.json").write_text(json.dumps({"raw_task_name": "X", "children": []}))
    (d / "x.json").write_text('{"examples": [{"input": "no instruction"}]}')
    with pytest.raises(UserError, match=r"x.json: examples\[0\]: missing field 'instruction'"):
        load_upstream(d)
    run_dir = tmp_path / "run"
    assert main(["import-tree", str(d), "--run-dir", str(run_dir)]) == 2
    assert "missing field 'instruction'" in capsys.readouterr().err
    assert not run_dir.exists()


def test_export_formats(upstream_tree, tmp_path):
    run_dir = tmp_path / "run"
    assert main(["import-tree", str(upstream_tree), "--run-dir", str(run_dir)]) == 0
    assert main(["export", "-r", str(run_dir), "-f", "jsonl", "--which", "kept", "-o", str(tmp_path / "d.jsonl")]) == 0
    first = json.loads(Path(tmp_path / "d.jsonl").read_text().splitlines()[0])
    assert first["task_path"] == "Assistance for text editting > Paraphrase" and first["depth"] == 1
    assert (
        main(["export", "-r", str(run_dir), "-f", "messages", "--which", "kept", "-o", str(tmp_path / "m.jsonl")]) == 0
    )
    msg = json.loads(Path(tmp_path / "m.jsonl").read_text().splitlines()[0])
    assert [m["role"] for m in msg["messages"]] == ["user", "assistant"]
    assert main(["export", "-r", str(run_dir), "-f", "csv"]) == 2
