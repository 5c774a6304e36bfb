"""`export`: `--format upstream` honours `--which` and flags pruned tasks; default names follow one scheme."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest

from explore_instruct.cli import main
from explore_instruct.llm.scripted import ScriptedLLM
from explore_instruct.runstore import RunStore
from explore_instruct.tree import load_upstream
from tests.fakes import fake_model
from tests.helpers import BASE, make_config, run_fake

PRUNED = "Paraphrase short sentences"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    names = iter(["Paraphrase sentences", PRUNED, "Simplify legal language", "Translate idioms"])

    def named(request):
        reply = json.loads(fake_model(request))
        for s in reply.get("subtasks", []):
            s["name"] = next(names)
        return json.dumps(reply)

    cfg = make_config(explore={"max_depth": 1, "breadth": [4], "new_per_call": 4}, sample={"size": 5})
    run = tmp_path_factory.mktemp("export") / "run"
    ctx, _, _ = run_fake(run, cfg, backend=ScriptedLLM(named))
    ctx.store.close()
    return run


def exported(run_dir: Path, out: Path, which: str) -> dict[str, list[str]]:
    """Task name -> instructions of an upstream export with `--which which`."""
    assert main(["export", "-r", str(run_dir), "-f", "upstream", "--which", which, "-o", str(out)]) == 0
    return {node.name: [e.instruction for e in node.examples] for node, _, _ in load_upstream(out).level_order()}


def by_task(run_dir: Path, which: str) -> dict[str, list[str]]:
    store = RunStore.open(run_dir)
    grouped: dict[str, list[str]] = defaultdict(list)
    for rec in sorted(store.dataset(which), key=lambda r: r["id"]):
        grouped[rec["task"]].append(rec["instruction"])
    store.close()
    return grouped


SEEDS = [e["instruction"] for e in BASE["root"]["examples"]]


@pytest.mark.parametrize("which", ["sample", "kept", "all"])
def test_upstream_holds_exactly_the_records_of_which(run_dir, tmp_path, which):
    tree = exported(run_dir, tmp_path / which, which)
    expected = by_task(run_dir, which)
    root = BASE["root"]["name"]
    # The root keeps its seeds (the release's format stores them there) besides its own records.
    assert tree[root] == SEEDS + [i for i in expected.pop(root, []) if i not in SEEDS]
    assert {name: ex for name, ex in tree.items() if name != root and ex} == dict(expected)


def test_sample_export_is_the_sample(run_dir, tmp_path):
    tree = exported(run_dir, tmp_path / "s", "sample")
    assert sum(len(ex) for name, ex in tree.items() if name != BASE["root"]["name"]) == 5


def test_pruned_tasks_are_flagged_not_dropped(run_dir, tmp_path):
    exported(run_dir, tmp_path / "k", "kept")
    meta = json.loads((tmp_path / "k" / "tree_meta_info.json").read_text(encoding="utf-8"))
    flags = {c["raw_task_name"]: c.get("pruned", False) for c in meta["children"]}
    assert flags[PRUNED] is True
    assert [name for name, flag in flags.items() if flag] == [PRUNED]
    assert "pruned" not in meta  # the root is never pruned


@pytest.mark.parametrize(
    ("args", "name"),
    [
        ([], "sample.alpaca.json"),
        (["-f", "jsonl", "--which", "kept"], "kept.jsonl"),
        (["-f", "messages"], "sample.messages.jsonl"),
        (["-f", "upstream", "--which", "all"], "all.upstream/tree_meta_info.json"),
    ],
)
def test_default_names_are_which_dot_format(run_dir, args, name):
    assert main(["export", "-r", str(run_dir), *args]) == 0
    assert (run_dir / "exports" / name).is_file()


def test_reviewed_export_of_an_unreviewed_run_says_why_it_is_empty(run_dir, tmp_path, capsys):
    out = tmp_path / "reviewed.json"
    assert main(["export", "-r", str(run_dir), "--which", "reviewed", "-o", str(out)]) == 0
    assert json.loads(out.read_text()) == []
    err = " ".join(capsys.readouterr().err.split())
    assert "warning: nobody has reviewed an example" in err and "explore-instruct review -r" in err
    assert main(["export", "-r", str(run_dir), "--which", "kept", "-o", str(tmp_path / "k.json")]) == 0
    assert "warning" not in capsys.readouterr().err  # only the reviewed export has this to say


def test_a_run_dir_that_is_a_file_is_one_line(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("root: {name: Rewriting, description: Rewrite text.}\n")
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    for argv in (["run", str(config), "-r", str(a_file)], ["stats", "-r", str(a_file)]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err == f"error: run dir {a_file} is a file, not a folder\n", err
    assert a_file.read_text() == "x"
