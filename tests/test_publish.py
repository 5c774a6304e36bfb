"""Publishing: the `hf` and `sharegpt` exports, the dataset card, `push` to a (fake) Hub, the study card."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from explore_instruct.cli import main
from explore_instruct.experiment.card import study_card
from explore_instruct.installation import install_command
from explore_instruct.publish.frontmatter import read_front_matter
from explore_instruct.review import decide
from explore_instruct.runstore import RunStore
from tests.fake_hub import FakeHub
from tests.helpers import make_config, run_fake

TOKEN = "hf_tEsT5eCr3tV4lu3DoNotLeak"  # distinctive: grepped for in every file and output

# Off a terminal, progress goes to stderr as plain lines (`comparing with the Hub: 1/2 0:00:00`).
PROGRESS_LINE = re.compile(r"^[^:\n]+: \d+(/\d+)? \d+:\d\d:\d\d( \(.*\))?$")


def message_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if not PROGRESS_LINE.match(line)]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("publish") / "run"
    ctx, _, _ = run_fake(run, make_config(sample={"size": 7}, publish={"license": "cc-by-4.0"}))
    ctx.store.close()
    return run


@pytest.fixture
def hf_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cache of this test's own: `datasets` reads its cache folder once, at import."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def export(run_dir: Path, out: Path, *args: str) -> None:
    assert main(["export", "-r", str(run_dir), "-o", str(out), *args]) == 0


@pytest.mark.parametrize("which", ["sample", "kept", "all"])
def test_load_dataset_on_the_hf_export_gives_the_alpaca_records_in_order(
    run_dir: Path, tmp_path: Path, hf_env: None, which: str
) -> None:
    import datasets

    export(run_dir, tmp_path / "hf", "-f", "hf", "--which", which, "--no-analysis")
    export(run_dir, tmp_path / "a.json", "-f", "alpaca", "--which", which)
    alpaca = json.loads((tmp_path / "a.json").read_text(encoding="utf-8"))
    train = datasets.load_dataset(str(tmp_path / "hf"))["train"]
    assert [{k: r[k] for k in ("instruction", "input", "output")} for r in train] == alpaca
    store = RunStore.open(run_dir)
    expected = store.dataset(which)  # type: ignore[arg-type]
    assert [(r["task"], r["task_path"], r["depth"], r["origin"]) for r in train] == [
        (r["task"], r["task_path"], r["depth"], r["origin"]) for r in expected
    ]


def test_dropped_records_carry_the_filter_fields(tmp_path: Path, hf_env: None) -> None:
    import datasets
    import pyarrow.parquet as pq

    run = tmp_path / "run"
    ctx, _, _ = run_fake(run, make_config(filter={"threshold": 0.3}))
    ctx.store.close()
    export(run, tmp_path / "hf", "-f", "hf", "--which", "dropped", "--no-analysis")
    export(run, tmp_path / "d.json", "-f", "alpaca", "--which", "dropped")
    alpaca = json.loads((tmp_path / "d.json").read_text(encoding="utf-8"))
    assert alpaca  # the low threshold dropped some
    table = pq.read_table(tmp_path / "hf" / "data" / "train-00000-of-00001.parquet")
    assert table.column_names[-4:] == ["drop_stage", "drop_reason", "dup_of", "score"]
    train = datasets.load_dataset(str(tmp_path / "hf"))["train"]
    assert [{k: r[k] for k in ("instruction", "input", "output")} for r in train] == alpaca
    assert {r["drop_stage"] for r in train} == {"filter"} and all(r["score"] > 0.3 for r in train)
    card = read_front_matter((tmp_path / "hf" / "README.md").read_text(encoding="utf-8"))
    assert card["explore_instruct"]["examples"]["dropped_filter"] == len(alpaca)


def test_card_yaml_parses_and_its_counts_equal_stats_json(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    export(run_dir, tmp_path / "hf", "-f", "hf", "--no-analysis")
    card = (tmp_path / "hf" / "README.md").read_text(encoding="utf-8")
    meta = read_front_matter(card)
    capsys.readouterr()
    assert main(["stats", "-r", str(run_dir), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    counts = meta["explore_instruct"]
    for key in ("tasks_per_depth", "pruned_tasks", "dropped_task_names", "examples"):
        assert counts[key] == stats[key], key
    assert counts["records"] == stats["examples"]["sampled"] == 7
    assert meta["license"] == "cc-by-4.0"  # from the config's publish.license
    assert {"synthetic", "explore-instruct"} <= set(meta["tags"])
    assert meta["task_categories"] == ["text-generation"] and meta["size_categories"] == ["n<1K"]
    assert meta["configs"][0]["data_files"][0]["path"] == "data/train-*"
    # The body states the same numbers, the tree, the config and the citation.
    e = stats["examples"]
    assert f"{e['written']} examples written" in card and f"{e['kept']} kept → {e['sampled']} sampled" in card
    assert "| Setting | Value |" in card and "@inproceedings{wan2023explore" in card and "```yaml" in card
    assert "## Limitations" in card and "Machine-written data" in card and "No licence was chosen" not in card
    snippet = card.split("```python\n", 1)[1].split("```", 1)[0]
    compile(snippet, "card", "exec")  # the loading example is valid Python
    export(run_dir, tmp_path / "hf2", "-f", "hf", "--no-analysis", "--license", "mit")
    assert read_front_matter((tmp_path / "hf2" / "README.md").read_text(encoding="utf-8"))["license"] == "mit"


def test_card_dates_come_from_the_call_log_and_exports_repeat_byte_for_byte(run_dir: Path, tmp_path: Path) -> None:
    from datetime import UTC, datetime

    for name in ("one", "two"):
        export(run_dir, tmp_path / name, "-f", "hf", "--analysis")
    files = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*") if p.is_file())
    assert Path("figures/verbnoun.png") in files and Path("figures/seed_overlap.png") in files
    for rel in files:
        assert (tmp_path / "one" / rel).read_bytes() == (tmp_path / "two" / rel).read_bytes(), rel
    card = (tmp_path / "one" / "README.md").read_text(encoding="utf-8")
    assert "](figures/verbnoun.png)" in card and "Unique verb–noun pairs" in card
    store = RunStore.open(run_dir)
    first, _last = store.calls.time_span()  # type: ignore[misc]
    assert datetime.fromtimestamp(first, UTC).strftime("%Y-%m-%d") in card


def test_without_analysis_the_card_says_so_and_has_no_figures(run_dir: Path, tmp_path: Path) -> None:
    export(run_dir, tmp_path / "hf", "-f", "hf", "--no-analysis")
    assert not (tmp_path / "hf" / "figures").exists()
    assert "Not computed (--no-analysis was given)" in (tmp_path / "hf" / "README.md").read_text(encoding="utf-8")


def test_review_fields_become_columns(run_dir: Path, tmp_path: Path, hf_env: None) -> None:
    import datasets

    copy = tmp_path / "run"
    import shutil

    shutil.copytree(run_dir, copy)
    store = RunStore.open(copy, write=True)
    kept = store.dataset("kept")
    decide(store.conn, kept[0]["id"], "edit", "ada", edited=("Edited instruction.", "", "Edited output."))
    decide(store.conn, kept[1]["id"], "reject", "ada")
    store.close()
    export(copy, tmp_path / "hf", "-f", "hf", "--which", "kept", "--no-analysis")
    train = datasets.load_dataset(str(tmp_path / "hf"))["train"]
    assert len(train) == len(kept) - 1
    assert train[0]["instruction"] == "Edited instruction."
    assert train[0]["review"]["decision"] == "edited" and train[0]["review"]["reviewer"] == "ada"
    assert train[0]["review"]["original"]["instruction"] == kept[0]["instruction"]
    assert train[1]["review"] is None


def test_sharegpt_holds_the_messages_turns(run_dir: Path, tmp_path: Path) -> None:
    export(run_dir, tmp_path / "s.jsonl", "-f", "sharegpt")
    export(run_dir, tmp_path / "m.jsonl", "-f", "messages")
    share = [json.loads(x) for x in (tmp_path / "s.jsonl").read_text(encoding="utf-8").splitlines()]
    msgs = [json.loads(x) for x in (tmp_path / "m.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(share) == len(msgs) == 7
    for s, m in zip(share, msgs, strict=True):
        assert [t["from"] for t in s["conversations"]] == ["human", "gpt"]
        assert [t["value"] for t in s["conversations"]] == [t["content"] for t in m["messages"]]
    assert main(["export", "-r", str(run_dir), "-f", "sharegpt"]) == 0
    assert (run_dir / "exports" / "sample.sharegpt.jsonl").is_file()


def test_hf_export_refuses_a_folder_holding_other_files(run_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    assert main(["export", "-r", str(run_dir), "-f", "hf", "-o", str(tmp_path / "mine"), "--no-analysis"]) == 2
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    assert main(["export", "-r", str(run_dir), "-f", "hf", "--license", "Not A Licence"]) == 2


# --- push ------------------------------------------------------------------------------------------


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch):
    with FakeHub({TOKEN: "alice", "hf_other": "bob"}, orgs={"alice": ["lab"]}) as fake:
        monkeypatch.setenv("HF_ENDPOINT", fake.url)
        monkeypatch.setenv("HF_TOKEN", TOKEN)
        monkeypatch.setenv("HF_HOME", str(Path(os.environ.get("TMPDIR", "/tmp")) / "hf-home-unused"))
        yield fake


def push(*args: str) -> int:
    return main(["push", *args])


def test_push_makes_one_commit_then_none_for_the_same_content(
    run_dir: Path, hub: FakeHub, capfd: pytest.CaptureFixture[str]
) -> None:
    assert push(str(run_dir), "alice/editing", "--no-analysis") == 0
    assert len(hub.commits) == 1
    commit = hub.commits[0]
    export = run_dir / "exports" / "sample.hf"
    local = {str(p.relative_to(export)): p.read_bytes() for p in export.rglob("*") if p.is_file()}
    assert set(commit.files) == {"README.md", "data/train-00000-of-00001.parquet"} == set(local)
    assert commit.files == local
    assert "load_dataset('alice/editing')" in local["README.md"].decode()
    first = capfd.readouterr()
    assert "pushed" in first.out
    assert push(str(run_dir), "alice/editing", "--no-analysis") == 0
    assert len(hub.commits) == 1
    assert "no new commit" in capfd.readouterr().out
    # Other content (here another licence on the card) is a second commit of just the card.
    assert push(str(run_dir), "alice/editing", "--no-analysis", "--license", "mit") == 0
    assert len(hub.commits) == 2 and set(hub.commits[1].files) == {"README.md"}


def test_push_to_a_branch_of_a_private_repo_with_another_token_variable(
    run_dir: Path, hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setenv("MY_HUB_TOKEN", TOKEN)
    args = [str(run_dir), "lab/editing", "--which", "kept", "--private", "--revision", "dev", "--no-analysis"]
    assert push(*args, "--token-env", "MY_HUB_TOKEN") == 0
    assert hub.repos["lab/editing"].private
    assert [c.revision for c in hub.commits] == ["dev"] and "data/train-00000-of-00001.parquet" in hub.files(
        "lab/editing", "dev"
    )
    assert hub.files("lab/editing", "main") == {}


def test_the_token_is_in_no_file_and_no_output(
    run_dir: Path, hub: FakeHub, capfd: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    assert push(str(copy), "alice/editing", "--analysis") == 0
    assert push(str(copy), "bob/editing", "--no-analysis") == 2  # an error path too
    captured = capfd.readouterr()
    assert TOKEN not in captured.out and TOKEN not in captured.err
    files = [p for p in copy.rglob("*") if p.is_file()]
    assert any(p.name == "README.md" for p in files)  # the export is among the files searched
    for p in files:
        assert TOKEN.encode() not in p.read_bytes(), p


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        ("no-token", "no Hugging Face token: set the environment variable HF_TOKEN"),
        ("bad-token", "refused the token (401)"),
        ("other-owner", "bob/editing belongs to bob"),
        ("hub-down", "cannot reach the Hub at http://127.0.0.1:"),
    ],
)
def test_push_errors_are_one_line_exit_2_and_no_commit(
    run_dir: Path,
    hub: FakeHub,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    setup: str,
    expected: str,
) -> None:
    repo = "alice/editing"
    if setup == "no-token":
        monkeypatch.delenv("HF_TOKEN")
    elif setup == "bad-token":
        monkeypatch.setenv("HF_TOKEN", "hf_wrong")
    elif setup == "other-owner":
        repo = "bob/editing"
    else:
        import socket

        with socket.socket() as s:  # a port nothing listens on
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    capfd.readouterr()
    assert push(str(run_dir), repo, "--no-analysis") == 2
    err = capfd.readouterr().err.strip()
    assert expected in err and len(message_lines(err)) == 1, err
    assert hub.commits == []
    assert "hf_wrong" not in err and TOKEN not in err


def test_a_token_given_as_the_variable_name_is_refused_without_echoing_it(
    run_dir: Path, hub: FakeHub, capfd: pytest.CaptureFixture[str]
) -> None:
    capfd.readouterr()
    assert push(str(run_dir), "alice/editing", "--token-env", TOKEN) == 2
    err = capfd.readouterr().err
    assert "takes the NAME of an environment variable" in err and TOKEN not in err
    assert hub.requests == []


def test_card_metadata_the_hub_rejects_is_one_line(
    run_dir: Path, hub: FakeHub, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("explore_instruct.publish.frontmatter.card_text", lambda meta, body: "---\n[broken\n---\n")
    monkeypatch.setattr("explore_instruct.publish.card.card_text", lambda meta, body: "---\n[broken\n---\n")
    capfd.readouterr()
    assert push(str(run_dir), "alice/editing", "--no-analysis") == 2
    err = capfd.readouterr().err.strip()
    assert "the Hub rejected the card's YAML metadata" in err and len(message_lines(err)) == 1
    assert hub.commits == []


def test_a_namespace_the_token_left_is_refused_before_anything_is_sent(run_dir: Path, hub: FakeHub) -> None:
    hub.add_repo("lab/shared")
    hub.orgs["alice"] = []  # alice left the organisation
    assert push(str(run_dir), "lab/shared", "--no-analysis") == 2
    assert hub.commits == [] and hub.files("lab/shared") == {}
    assert not any(r.startswith("POST") for r in hub.requests)


def test_a_commit_the_hub_fails_is_one_line_and_leaves_the_repository_as_it_was(
    run_dir: Path, hub: FakeHub, capfd: pytest.CaptureFixture[str]
) -> None:
    hub.add_repo("alice/editing", {"README.md": b"old card"})
    hub.fail_commits = True
    capfd.readouterr()
    assert push(str(run_dir), "alice/editing", "--no-analysis") == 2
    err = capfd.readouterr().err.strip()
    assert "answered 500 for alice/editing; nothing was pushed" in err and len(message_lines(err)) == 1
    assert hub.commits == [] and hub.files("alice/editing") == {"README.md": b"old card"}
    hub.fail_commits = False
    assert push(str(run_dir), "alice/editing", "--no-analysis") == 0
    assert len(hub.commits) == 1 and hub.files("alice/editing")["README.md"] != b"old card"


def test_without_the_hub_extra_export_and_push_say_how_to_install_it(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "pyarrow", None)  # an import of it fails
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    capfd.readouterr()
    assert main(["export", "-r", str(run_dir), "-f", "hf", "-o", str(tmp_path / "hf"), "--no-analysis"]) == 2
    err = capfd.readouterr().err
    assert "'hub' extra" in err and install_command(["hub"]) in err and "study-deps" not in err
    assert not (tmp_path / "hf").exists()
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setattr("explore_instruct.publish.sources.run_files", lambda *a: ({"README.md": b"x"}, tmp_path))
    assert push(str(run_dir), "alice/editing") == 2
    assert f"(huggingface_hub is not installed): {install_command(['hub'])}" in capfd.readouterr().err


# --- the study -------------------------------------------------------------------------------------


@pytest.fixture
def study(tmp_path: Path) -> Path:
    out = tmp_path / "study"
    out.mkdir()
    cells = [
        {"cell": "explore", "dataset": "explore", "examples": 5, "comparisons": {}},
        {"cell": "self_instruct", "dataset": "self_instruct", "examples": 1, "comparisons": {}},
    ]
    result = {"version": 1, "experiment": "demo", "baselines": ["self_instruct"], "cells": cells}
    (out / "results.json").write_text(json.dumps(result))
    (out / "results.csv").write_text("cell,examples\nexplore,5\nself_instruct,1\n")
    (out / "results.md").write_text("# Experiment demo\n\n## Main comparison\n\n| Cell | Examples |\n|---|---|\n")
    spec = (
        "name: demo\nrun: /somewhere/private/demo.yaml\ndatasets:\n  explore: {kind: run}\n"
        "  self_instruct: {kind: self_instruct, size: 20}\naxes:\n- {dataset: explore, depth: [1]}\n"
        "train: {model: embedded}\nevaluate:\n  judge:\n    llm: {backend: openai, model: gpt-judge}\n"
    )
    (out / "spec.resolved.yaml").write_text(spec)
    (out / "verb_noun_pairs.png").write_bytes(b"\x89PNG fake")
    return out


def test_study_card_names_models_datasets_and_results(study: Path) -> None:
    card = study_card(study, license_id="cc-by-4.0")
    meta = read_front_matter(card)
    assert meta["license"] == "cc-by-4.0" and "explore-instruct" in meta["tags"]
    assert meta["configs"][0]["data_files"][0]["path"] == "results.csv"
    assert "### Main comparison" in card and "gpt-judge" in card and "self_instruct" in card
    assert "explore: depth = [1]" in card
    assert "/somewhere/private" not in card  # machine paths are cut to file names


def test_push_takes_an_experiment_folder(study: Path, hub: FakeHub, hf_env: None) -> None:
    import datasets

    assert push(str(study), "alice/study") == 0
    (commit,) = hub.commits
    assert {"README.md", "results.json", "results.csv", "results.md", "spec.resolved.yaml"} <= set(commit.files)
    assert "verb_noun_pairs.png" in commit.files
    assert (study / "README.md").read_bytes() == commit.files["README.md"]
    rows = datasets.load_dataset(str(study), "results")["train"]
    assert [r["cell"] for r in rows] == ["explore", "self_instruct"]
    assert push(str(study), "alice/study") == 0 and len(hub.commits) == 1


def test_an_imported_tree_card_claims_no_generator(upstream_tree: Path, tmp_path: Path) -> None:
    from explore_instruct.publish.card import NOT_RECORDED

    assert main(["import-tree", str(upstream_tree), "-r", str(tmp_path / "run"), "--domain", "rewriting"]) == 0
    export(tmp_path / "run", tmp_path / "hf", "-f", "hf", "--which", "kept", "--no-analysis")
    card = (tmp_path / "hf" / "README.md").read_text(encoding="utf-8")
    assert f"| Generator model | {NOT_RECORDED} |" in card and "SmolLM2" not in card
    assert "This run imported its tree" in card
    assert str(upstream_tree.parent) not in card  # no path of this machine on a card meant for the public
    assert read_front_matter(card)["explore_instruct"]["records"] == 4431
    assert read_front_matter(card)["license"] == "unknown" and "No licence was chosen" in card
