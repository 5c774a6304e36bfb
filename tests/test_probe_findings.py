"""Findings of the outside probe (a new user's and an attacker's tries), one test per fixed problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from explore_instruct.runstore import RunStore
from explore_instruct.tree import Example


def arrival_order_store(run_dir: Path) -> RunStore:
    """A tree whose rows arrived out of order: the second subtree's nodes and examples were stored first.

    root > a > a0 > a0x and root > b > b0 > b0x, with b0 (and so b0x) inserted before a0 (and a0x),
    as happens when b's lookahead reply comes back before a's.
    """
    store = RunStore.create(run_dir, "domain: generic\n")
    ids: dict[str, int] = {}

    def add(key: str, parent: str | None, position: int) -> None:
        depth = key.count("/")
        pid = ids[parent] if parent else None
        ids[key] = store.add_node(key=key, parent_id=pid, position=position, depth=depth, name=key)

    with store.transaction():
        add("root", None, 0)
        add("root/0", "root", 0)
        add("root/1", "root", 1)
        add("root/1/0", "root/1", 0)
        add("root/0/0", "root/0", 0)
        add("root/1/0/0", "root/1/0", 0)
        add("root/0/0/0", "root/0/0", 0)
        for key in ("root/1/0/0", "root/0/0/0", "root/1", "root/0"):
            for i in (1, 0):
                store.add_example(
                    key=f"{key}#g{i:05d}.000",
                    node_id=ids[key],
                    origin="generate",
                    example=Example(f"Do {key} number {i}.", "", "Done."),
                )
    return store


def test_level_order_follows_the_tree_not_the_order_replies_arrived(tmp_path: Path) -> None:
    # Pruning ("an earlier task in level order") and the diversity filter's greedy order both walk
    # this order, so it must not depend on which reply came back first.
    store = arrival_order_store(tmp_path / "run")
    keys = [n.key for n in store.nodes()]
    assert keys == ["root", "root/0", "root/1", "root/0/0", "root/1/0", "root/0/0/0", "root/1/0/0"]
    store.close()


def test_exported_records_are_in_tree_order_whatever_the_arrival_order(tmp_path: Path) -> None:
    store = arrival_order_store(tmp_path / "run")
    tasks = [(r["task"], r["instruction"]) for r in store.dataset("kept")]
    assert tasks == [
        ("root/0", "Do root/0 number 0."),
        ("root/0", "Do root/0 number 1."),
        ("root/1", "Do root/1 number 0."),
        ("root/1", "Do root/1 number 1."),
        ("root/0/0/0", "Do root/0/0/0 number 0."),
        ("root/0/0/0", "Do root/0/0/0 number 1."),
        ("root/1/0/0", "Do root/1/0/0 number 0."),
        ("root/1/0/0", "Do root/1/0/0 number 1."),
    ]
    assert [r["task"] for r in store.dataset("all")] == [t for t, _ in tasks]
    store.close()


@pytest.fixture(autouse=True)
def _quiet_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # rich wraps at 80 columns otherwise, splitting lines under test


def small_run(tmp_path: Path) -> Path:
    from tests.helpers import make_config, run_fake

    run_dir = tmp_path / "run"
    ctx, _, _ = run_fake(run_dir, make_config(explore={"max_depth": 1, "breadth": [2]}))
    ctx.store.close()
    return run_dir


def test_stats_prints_its_summary_on_stdout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # `stats` exists to print the summary: `stats | less` or `stats > s.txt` must get it.
    from explore_instruct.cli import main

    run_dir = small_run(tmp_path)
    capsys.readouterr()
    assert main(["stats", "-r", str(run_dir)]) == 0
    captured = capsys.readouterr()
    assert "written" in captured.out and "kept" in captured.out
    assert captured.err == ""


def test_a_stage_command_that_stops_at_once_prints_only_its_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A run directory that holds a config but no tree yet: `sample` stops before any stage draws a bar.
    from explore_instruct.cli import main
    from explore_instruct.config import build_config
    from tests.helpers import BASE

    RunStore.create(tmp_path / "run", build_config(BASE, "t").to_yaml()).close()
    assert main(["sample", "-r", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "no tree yet" in err
    assert err.count("\n") == 1


def test_ctrl_c_hint_names_resume_only_where_the_command_has_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from explore_instruct.analysis import report as analysis_report
    from explore_instruct.cli import INTERRUPTED, main

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(analysis_report, "analyze", interrupted)
    run_dir = small_run(tmp_path)
    capsys.readouterr()
    assert main(["analyze", f"X={run_dir}", "--out", str(tmp_path / "report")]) == INTERRUPTED
    err = capsys.readouterr().err
    assert err.startswith("interrupted: ") and "--resume" not in err  # analyze has no --resume

    monkeypatch.setattr("explore_instruct.cli.pipeline.run_stages", interrupted)
    assert main(["sample", "-r", str(run_dir)]) == INTERRUPTED
    assert "--resume" not in capsys.readouterr().err  # a stage command continues by being run again
    config = tmp_path / "c.yaml"
    config.write_text("domain: generic\n")
    monkeypatch.setattr("explore_instruct.cli.pipeline.load_config", lambda *a, **k: None)
    monkeypatch.setattr("explore_instruct.cli.pipeline._run", interrupted)
    assert main(["run", str(config), "-r", str(tmp_path / "new")]) == INTERRUPTED
    assert "interrupted: resume with --resume" in capsys.readouterr().err


def test_a_huge_examples_per_task_is_a_config_error_not_a_memory_error(tmp_path: Path) -> None:
    # 1e12 examples per task (a typo) made enrichment allocate a list of 1e11 calls: MemoryError.
    from explore_instruct.config import MAX_EXAMPLES_PER_TASK
    from explore_instruct.errors import UserError
    from tests.helpers import make_config

    with pytest.raises(UserError, match="examples per task cannot exceed"):
        make_config(generate={"examples_per_task": [300, 10**12]})
    make_config(generate={"examples_per_task": [MAX_EXAMPLES_PER_TASK]})


def test_agreement_line_without_a_twice_rated_item_says_so() -> None:
    from explore_instruct.web.study_report import _fleiss_items

    assert _fleiss_items({"value": None, "items": 0, "raters_per_item": None}) == "no item has two or more votes yet"
    assert _fleiss_items({"value": 0.5, "items": 4, "raters_per_item": 3}) == "4 items with 3 raters each"


def test_a_bad_override_is_blamed_on_the_command_line_not_the_file(tmp_path: Path) -> None:
    import yaml

    from explore_instruct.config import load_config, load_llm_config
    from explore_instruct.errors import UserError
    from tests.helpers import BASE

    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(BASE))
    with pytest.raises(
        UserError, match=r"explore.max_depth: .* \(the value given on the command line for explore.max_depth\)"
    ):
        load_config(config, {"explore.max_depth": 99})
    with pytest.raises(UserError, match=r"for explore.breadth\)$"):
        load_config(config, {"explore.breadth": ["x"]})
    config.write_text(yaml.safe_dump({**BASE, "explore": {"max_depth": 99}}))
    with pytest.raises(UserError) as err:
        load_config(config, {"explore.breadth": [2]})  # the file's own mistake: no command-line blame
    assert "command line" not in str(err.value) and "explore.max_depth" in str(err.value)
    config.write_text("llm: {max_concurrency: 0}\n")
    with pytest.raises(UserError, match=r"llm.max_concurrency"):
        load_llm_config(config)


@pytest.mark.parametrize(
    ("fmt", "name"), [("jsonl", "run.db"), ("alpaca", "config.yaml"), ("jsonl", "run.lock"), ("upstream", ".")]
)
def test_export_never_replaces_the_runs_own_state(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fmt: str, name: str
) -> None:
    # `export --out RUN/run.db` used to replace the database with JSONL (exit 0): the run was gone.
    from explore_instruct.cli import main

    run_dir = small_run(tmp_path)

    def state() -> dict[str, bytes]:  # SQLite's -wal/-shm companions come and go with readers
        return {
            p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file() and p.suffix not in (".db-wal", ".db-shm")
        }

    before = state()
    capsys.readouterr()
    assert main(["export", "-r", str(run_dir), "--format", fmt, "--out", str(run_dir / name)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert state() == before
    assert main(["stats", "-r", str(run_dir), "--json"]) == 0


@pytest.mark.parametrize("content", [b"not a database at all\n", None])
def test_a_damaged_or_foreign_run_db_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes | None
) -> None:
    import sqlite3

    from explore_instruct.cli import main

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    if content is None:  # another program's SQLite file
        with sqlite3.connect(run_dir / "run.db") as conn:
            conn.execute("CREATE TABLE other (x)")
        conn.close()
    else:
        (run_dir / "run.db").write_bytes(content)
    (run_dir / "config.yaml").write_text("domain: generic\n")
    for argv in (["stats", "-r", str(run_dir)], ["export", "-r", str(run_dir)], ["review", "-r", str(run_dir)]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and "run.db" in err, err
    if content is None:  # and the foreign file was left as it was: no run tables added to it
        with sqlite3.connect(run_dir / "run.db") as conn:
            assert [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")] == ["other"]
        conn.close()


def test_import_tree_into_an_existing_run_does_not_suggest_a_flag_it_lacks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from explore_instruct.cli import main

    run_dir = small_run(tmp_path)
    tree = tmp_path / "tree"
    assert main(["export", "-r", str(run_dir), "--format", "upstream", "--out", str(tree)]) == 0
    capsys.readouterr()
    assert main(["import-tree", str(tree), "--run-dir", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert "already holds a run" in err and "--resume" not in err


@pytest.mark.parametrize(
    "argv",
    [
        ["filter-file", "/dev/null", "--out", "{tmp}/kept.json"],
        ["run", "/dev/null", "--run-dir", "{tmp}/run"],
        ["analyze", "/dev/null", "--out", "{tmp}/report"],
        ["experiment", "/dev/null", "--dry-run"],
    ],
)
def test_a_device_as_input_is_refused_before_reading(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    # /dev/zero or /dev/urandom as an input file was read until memory ran out (the kernel killed the
    # process). /dev/null stands in for them here: the same kind of file, but it ends.
    from explore_instruct.cli import main

    assert main([a.format(tmp=tmp_path) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: /dev/null: is a device") and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_a_non_utf8_experiment_spec_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from explore_instruct.cli import main

    spec = tmp_path / "spec.yaml"
    spec.write_bytes(b"name: \xff\xfe\n")
    assert main(["experiment", str(spec), "--dry-run"]) == 2
    assert "not UTF-8" in capsys.readouterr().err


def test_experiment_spec_with_a_duplicate_key_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from explore_instruct.cli import main

    spec = tmp_path / "spec.yaml"
    spec.write_text("name: a\nname: b\n", encoding="utf-8")
    assert main(["experiment", str(spec), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "duplicate key 'name'" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(("field", "value"), [("timeout", ".inf"), ("max_tokens", "1e12"), ("max_tokens", "10000000")])
def test_llm_limits_are_bounded(tmp_path: Path, capsys: pytest.CaptureFixture[str], field: str, value: str) -> None:
    from explore_instruct.cli import main

    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"root: {{name: Rewriting}}\nllm: {{{field}: {value}}}\n", encoding="utf-8")
    assert main(["run", str(cfg), "--run-dir", str(tmp_path / "r")]) == 2
    assert f"llm.{field}" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
