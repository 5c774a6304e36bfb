"""Bad input ends a command with one line and exit code 2, never a traceback (issue 8, items 10 and 12).

The property tests at the end drive the real CLI (`explore_instruct.cli.main`) with generated configs,
seed trees and record files, and check: exit code 0 or 2, no traceback, nothing written outside the
outputs the command was given.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from explore_instruct import pipeline
from explore_instruct.cli import main
from explore_instruct.config import build_config
from explore_instruct.datafile import format_for_path, read_records
from explore_instruct.errors import UserError
from explore_instruct.runstore import RunStore
from explore_instruct.tree import MAX_TREE_DEPTH, load_upstream
from tests.helpers import BASE, fake_backend, merge

# A config whose run would stop at once (nothing listens on port 9): a check that wrongly lets a
# config through ends in "stopped" (exit 1), not in a long run.
UNREACHABLE = {"llm": {"backend": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m"}}
ENDPOINT_YAML = yaml.safe_dump(UNREACHABLE)


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


# --------------------------------------------------------------------------- CLI usage errors


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["run", "--no-such-flag"], "No such option: --no-such-flag"),
        (["run"], "Missing argument"),
        (["no-such-command"], "No such command"),
        (["run", "c.yaml", "--max-depth", "deep"], "--max-depth"),
        (["export", "--run-dir"], "requires an argument"),
        (["filter-file", "in.json"], "Missing option '--out'"),
        (["stats", "--run-dir", "r", "extra"], "unexpected extra argument"),
    ],
)
def test_usage_errors_are_one_line_exit_2(argv: list[str], says: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith("error: ") and says in line and "--help" in line


def test_help_still_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--help"]) == 0
    assert "--resume" in capsys.readouterr().out


# --------------------------------------------------------------------------- configs


def write_config(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "c.yaml"
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def run_config(tmp_path: Path, config: Path) -> int:
    return main(["run", str(config), "--run-dir", str(tmp_path / "run")])


def dump(over: dict[str, Any]) -> str:
    return yaml.safe_dump(merge(merge(BASE, UNREACHABLE), over))


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (b"root:\n  name: caf\xe9\n", "not UTF-8"),
        (f"{ENDPOINT_YAML}root: {{name: A}}\nroot: {{name: B}}\n", "duplicate key 'root'"),
        (f"{ENDPOINT_YAML}  model: b\nroot: {{name: A}}\n", "duplicate key 'model'"),
        (dump({"root": {"name": "   "}}), "root.name: Value error, must not be empty or only whitespace"),
        (dump({"root": {"examples": [{"instruction": " \t"}]}}), "root.examples.0.instruction"),
        (dump({"llm": {"model": " "}}), "llm.model"),
        (dump({"explore": {"max_depth": True}}), "explore.max_depth: Input should be a valid integer"),
        (dump({"sample": {"size": "10"}}), "sample.size: Input should be a valid integer"),
        (dump({"explore": {"breadth": [True, 2]}}), "explore.breadth.0"),
        (dump({"llm": {"base_url": "http://127.0.0.1:99999/v1"}}), "llm.base_url"),
        (dump({"llm": {"base_url": "http://127.0.0.1:port/v1"}}), "check the port"),
        (dump({"llm": {"base_url": "127.0.0.1:8000/v1"}}), "http:// or https://"),
        ("[" * 5000 + "]" * 5000, "nested too deeply"),
    ],
)
def test_bad_configs_are_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str | bytes, says: str
) -> None:
    assert run_config(tmp_path, write_config(tmp_path, text)) == 2
    line = one_error_line(capsys.readouterr().err)
    assert says in line, line
    assert not (tmp_path / "run").exists()


def test_config_path_that_is_a_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "folder.yaml").mkdir()
    assert run_config(tmp_path, tmp_path / "folder.yaml") == 2
    assert "is a directory" in one_error_line(capsys.readouterr().err)


def test_strict_config_still_takes_ints_for_floats_and_yaml_booleans() -> None:
    config = build_config(merge(BASE, {"llm": {"temperature": 1, "timeout": 30}, "prune": {"enabled": False}}), "t")
    assert config.llm.temperature == 1.0 and config.llm.timeout == 30.0 and config.prune.enabled is False


def test_sample_on_a_run_without_a_tree(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    RunStore.create(tmp_path / "run", build_config(merge(BASE, {}), "t").to_yaml()).close()
    assert main(["sample", "--run-dir", str(tmp_path / "run")]) == 2
    assert "no tree yet" in one_error_line(capsys.readouterr().err)


# --------------------------------------------------------------------------- record files


@pytest.mark.parametrize(
    "text",
    ["[" * 100_000 + "]" * 100_000, '{"instruction": "a"}\n' + '{"a": ' * 100_000 + "1" + "}" * 100_000 + "\n"],
)
def test_deeply_nested_record_files_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text(text)
    assert main(["filter-file", str(src), "--out", str(tmp_path / "out.jsonl")]) == 2
    assert "nested too deeply" in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "out.jsonl").exists()


def test_one_output_format_guesser() -> None:
    assert format_for_path("a/KEPT.JSONL") == "jsonl"
    assert format_for_path("kept.json", default="jsonl") == "json"
    assert format_for_path("kept.txt") == "json"
    assert format_for_path("kept.txt", default="jsonl") == "jsonl"


def test_filter_file_keeps_the_input_format_for_other_suffixes(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text('{"instruction": "one"}\n{"instruction": "two words"}\n')
    assert main(["filter-file", str(src), "--out", str(tmp_path / "kept.txt")]) == 0
    assert read_records(tmp_path / "kept.txt")[1] == "jsonl"


# --------------------------------------------------------------------------- seed trees (item 10)


def tree_with_child(folder: Path, child_file: str) -> Path:
    folder.mkdir()
    meta = {
        "raw_task_name": "Root",
        "config_filename": "root.json",
        "children": [{"raw_task_name": "Child", "config_filename": child_file}],
    }
    (folder / "tree_meta_info.json").write_text(json.dumps(meta))
    (folder / "root.json").write_text(json.dumps({"examples": [{"instruction": "Root example"}]}))
    return folder


def test_missing_node_file_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tree = tree_with_child(tmp_path / "tree", "child.json")
    assert main(["import-tree", str(tree), "--run-dir", str(tmp_path / "run")]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "child.json: no such file" in line and "children[0]" in line
    assert not (tmp_path / "run").exists()


def test_looping_node_file_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tree = tree_with_child(tmp_path / "tree", "child.json")
    (tree / "child.json").symlink_to(tree / "other.json")
    (tree / "other.json").symlink_to(tree / "child.json")
    assert main(["import-tree", str(tree), "--run-dir", str(tmp_path / "run")]) == 2
    assert "child.json: a symbolic link that loops" in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "run").exists()


def test_node_file_that_is_a_folder_is_named(tmp_path: Path) -> None:
    tree = tree_with_child(tmp_path / "tree", "child.json")
    (tree / "child.json").mkdir()
    with pytest.raises(UserError, match=r"child\.json: not a file"):
        load_upstream(tree)


def test_non_string_example_fields_are_refused(tmp_path: Path) -> None:
    tree = tree_with_child(tmp_path / "tree", "child.json")
    (tree / "child.json").write_text(json.dumps({"examples": [{"instruction": "x", "input": {"a": 1}}]}))
    with pytest.raises(UserError, match=r"child.json: examples\[0\]: field 'input' is a dict, expected a string"):
        load_upstream(tree)


def test_a_tree_too_deep_is_refused(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    node: dict[str, Any] = {"raw_task_name": "leaf", "config_filename": "n.json"}
    for _ in range(MAX_TREE_DEPTH + 1):
        node = {"raw_task_name": "n", "config_filename": "n.json", "children": [node]}
    (tree / "tree_meta_info.json").write_text(json.dumps(node))
    (tree / "n.json").write_text(json.dumps({"examples": []}))
    with pytest.raises(UserError, match=f"deeper than {MAX_TREE_DEPTH} levels"):
        load_upstream(tree)


# --------------------------------------------------------------------------- property tests

PROPERTY = settings(
    max_examples=int(os.environ.get("BAD_INPUT_EXAMPLES", "25")),  # raise it for a deeper local search
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

# Small sizes pinned on every generated config, so a config that is valid runs in a blink.
PINS = {
    "explore.max_depth": 1,
    "explore.breadth": [2],
    "explore.new_per_call": 2,
    "generate.examples_per_task": [2],
    "generate.per_call": 2,
    "generate.max_extra_calls": 0,
    "sample.size": 3,
}

json_leaf = st.none() | st.booleans() | st.integers(-5, 5) | st.floats(allow_nan=True) | st.text(max_size=8)
json_value = st.recursive(
    json_leaf,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every path under `folder` (links not followed), with file contents."""
    out: dict[str, bytes | None] = {}
    for path in folder.rglob("*"):
        rel = str(path.relative_to(folder))
        out[rel] = path.read_bytes() if path.is_file() and not path.is_symlink() else None
    return out


@contextlib.contextmanager
def workdir() -> Iterator[Path]:
    """A fresh folder as the current directory, three levels down in a sandbox (see `written_outside`).

    A path that climbs out (`../../x`) still lands in the sandbox, where the test sees it.
    """
    sandbox = Path(tempfile.mkdtemp(prefix="bad_input_"))
    folder = sandbox / "a" / "b" / "work"
    folder.mkdir(parents=True)
    old = Path.cwd()
    os.chdir(folder)
    try:
        yield folder
    finally:
        os.chdir(old)
        shutil.rmtree(sandbox, ignore_errors=True)


def sandbox_of(work: Path) -> Path:
    return work.parents[2]


def run_cli(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    return code, err.getvalue()


def assert_clean_exit(code: int, err: str) -> None:
    assert code in (0, 2), err
    assert "Traceback" not in err
    if code == 2:
        one_error_line(err)


def written_outside(work: Path, before: dict[str, bytes | None], *outputs: str) -> set[str]:
    """Paths in the sandbox that changed since `before` and are not one of `outputs` (or inside one)."""
    after = snapshot(sandbox_of(work))
    named = [f"a/b/work/{o}" for o in outputs]
    changed = {p for p in set(before) | set(after) if before.get(p, b"?") != after.get(p, b"?")}
    return {p for p in changed if not any(p == o or p.startswith(f"{o}/") for o in named)}


@st.composite
def config_text(draw: st.DrawFn) -> bytes:
    if draw(st.booleans()):
        return draw(st.binary(max_size=60))
    data = merge(BASE, {"llm": {"backend": "local"}})
    for _ in range(draw(st.integers(1, 3))):
        section = draw(st.sampled_from([*data, "unknown_section"]))
        current = data.get(section)
        if isinstance(current, dict) and current and draw(st.booleans()):
            key = draw(st.sampled_from([*current, "unknown_key"]))
            current[key] = draw(json_value | st.sampled_from(["   ", True, "http://u:p@h:1/v1", "http://h:99999"]))
        elif draw(st.booleans()):
            data.pop(section, None)
        else:
            data[section] = draw(json_value)
    return yaml.safe_dump(data).encode()


@PROPERTY
@given(text=config_text())
def test_property_generated_configs(text: bytes) -> None:
    pins = [f"--set={k}={json.dumps(v)}" for k, v in PINS.items()]
    with workdir() as d, mock.patch.object(pipeline, "build_backend", lambda config: fake_backend()):
        (d / "c.yaml").write_bytes(text)
        before = snapshot(sandbox_of(d))
        code, err = run_cli(["run", "c.yaml", "--run-dir", "run", *pins])
        assert_clean_exit(code, err)
        assert written_outside(d, before, "run") == set()


# {work} and {sandbox} become absolute paths inside the test's sandbox.
NODE_NAMES = ["a.json", "b.json", "../outside.json", "{work}/outside.json", "link.json", "loop.json", "dir", "gone"]
TASK_NAMES = ["ok", "../../escape", "a/b", "..", ".", "{sandbox}/abs", "x" * 300, "Name With Spaces"]


def mostly(draw: st.DrawFn, usual: st.SearchStrategy[Any], odd: st.SearchStrategy[Any]) -> Any:
    """A draw from `usual` four times in five, else from `odd`: mostly well-formed, so deep paths get tried."""
    return draw(odd if draw(st.integers(0, 4)) == 0 else usual)


@st.composite
def meta_entry(draw: st.DrawFn, depth: int = 0) -> Any:
    if draw(st.integers(0, 9)) == 0:
        return draw(json_value)  # not even an object
    entry: dict[str, Any] = {}
    if draw(st.integers(0, 5)):
        entry["raw_task_name"] = mostly(draw, st.text(min_size=1, max_size=12), json_leaf)
    if draw(st.booleans()):
        entry["task_name"] = mostly(draw, st.sampled_from(TASK_NAMES), json_leaf)
    if draw(st.integers(0, 4)):
        entry["config_filename"] = mostly(draw, st.sampled_from(NODE_NAMES), json_leaf)
    if depth < 2 and draw(st.booleans()):
        entry["children"] = mostly(draw, st.lists(meta_entry(depth + 1), max_size=2), json_leaf)
    return entry


valid_examples = st.fixed_dictionaries(
    {"examples": st.lists(st.fixed_dictionaries({"instruction": st.text(min_size=1, max_size=10)}), max_size=2)}
)


@st.composite
def node_body(draw: st.DrawFn) -> Any:
    return mostly(draw, valid_examples, json_value)


@PROPERTY
@given(meta=meta_entry(), a=node_body(), b=st.binary(max_size=20))
def test_property_generated_seed_trees(meta: Any, a: Any, b: bytes) -> None:
    with workdir() as d:
        (d / "outside.json").write_text(json.dumps({"examples": [{"instruction": "private"}]}))
        tree = d / "tree"
        tree.mkdir()
        meta_text = json.dumps(meta).replace("{work}", str(d)).replace("{sandbox}", str(sandbox_of(d)))
        (tree / "tree_meta_info.json").write_text(meta_text)
        (tree / "a.json").write_text(json.dumps(a))
        (tree / "b.json").write_bytes(b)
        (tree / "link.json").symlink_to(d / "outside.json")
        (tree / "loop.json").symlink_to(tree / "loop.json")
        (tree / "dir").mkdir()
        before = snapshot(sandbox_of(d))
        code, err = run_cli(["import-tree", "tree", "--run-dir", "run"])
        assert_clean_exit(code, err)
        if code == 0:
            assert "private" not in (d / "run" / "data" / "kept.jsonl").read_text()
            code, err = run_cli(["export", "-r", "run", "-f", "upstream", "--which", "all", "-o", "out"])
            assert_clean_exit(code, err)
            assert all("/" not in p for p in snapshot(d / "out")), "upstream files belong directly in --out"
        assert written_outside(d, before, "run", "out") == set()


@st.composite
def record_file(draw: st.DrawFn) -> bytes:
    kind = draw(st.integers(0, 3))
    if kind == 0:
        return draw(st.binary(max_size=80))
    if kind == 1:
        depth = draw(st.integers(1, 50_000))
        return ("[" * depth + "]" * depth).encode()
    records = st.dictionaries(st.sampled_from(["instruction", "input", "output", "x"]), json_value, max_size=3)
    rows = draw(st.lists(records | json_value, max_size=4))
    if kind == 2:
        return json.dumps(rows).encode()
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


@PROPERTY
@given(data=record_file(), threshold=st.sampled_from(["0.7", "0", "1", "nan"]))
def test_property_generated_record_files(data: bytes, threshold: str) -> None:
    with workdir() as d:
        (d / "in.json").write_bytes(data)
        before = snapshot(sandbox_of(d))
        code, err = run_cli(
            ["filter-file", "in.json", "--out", "kept.jsonl", "--explain", "why.jsonl", "--threshold", threshold]
        )
        assert_clean_exit(code, err)
        assert written_outside(d, before, "kept.jsonl", "why.jsonl") == set()
