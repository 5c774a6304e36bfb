"""One CLI vocabulary: every command names the same concept the same way; old spellings are hidden aliases."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import typer.main
import yaml
from typer.testing import CliRunner

from explore_instruct import __version__
from explore_instruct.cli import app, main
from explore_instruct.cli.vocabulary import OLD_SPELLINGS, AliasedCommand, rewrite_old_spellings

# concept -> (its option names, the parameter names that express it in any command)
CONCEPTS: dict[str, tuple[set[str], set[str]]] = {
    "endpoint URL": ({"--base-url"}, {"base_url", "endpoint"}),
    "token limit": ({"--max-tokens"}, {"max_tokens", "max_new_tokens"}),
    "calls in flight": ({"--max-concurrency"}, {"max_concurrency", "concurrency"}),
    "output path": ({"--out", "-o"}, {"out", "out_path", "out_dir", "out_file", "output"}),
    "run directory": ({"--run-dir", "-r"}, {"run_dir"}),
    "worker processes": ({"--workers"}, {"workers", "processes", "n_process"}),
    "sample size": ({"--sample-size"}, {"sample_size", "num"}),
    "config override": ({"--set", "-s"}, {"sets"}),
    "key variable": ({"--api-key-env"}, {"api_key_env"}),
}
FORBIDDEN = re.compile(r"--(endpoint|max-new-tokens|concurrency|processes|num)\b(?![-_])")


def commands() -> Iterator[tuple[tuple[str, ...], Any]]:
    """(path of names, click command) for every leaf command of the app."""

    def walk(path: tuple[str, ...], cmd: Any) -> Iterator[tuple[tuple[str, ...], Any]]:
        subs = getattr(cmd, "commands", None)
        if subs:
            for name, sub in subs.items():
                yield from walk((*path, name), sub)
        else:
            yield path, cmd

    yield from walk((), typer.main.get_command(app))


ALL = list(commands())
IDS = [" ".join(path) for path, _ in ALL]


def options(cmd: Any) -> list[Any]:
    return [p for p in cmd.params if p.param_type_name == "option" and p.name != "help"]


def test_the_walk_finds_every_command():
    names = set(IDS)
    for expected in ("run", "export", "filter-file", "analyze", "answer", "judge", "train", "baseline self-instruct"):
        assert expected in names


@pytest.mark.parametrize(("path", "cmd"), ALL, ids=IDS)
def test_each_concept_has_one_name(path, cmd):
    for param in options(cmd):
        for concept, (names, params) in CONCEPTS.items():
            if param.name in params:
                assert set(param.opts) | set(param.secondary_opts) == names, f"{' '.join(path)}: {concept}"
        if any(o.startswith("--out") for o in param.opts):
            assert set(param.opts) == {"--out", "-o"}, " ".join(path)


@pytest.mark.parametrize(("path", "cmd"), ALL, ids=IDS)
def test_help_shows_no_old_spelling(path, cmd):
    texts = [cmd.help or ""] + [p.help or "" for p in options(cmd)] + [o for p in options(cmd) for o in p.opts]
    assert not [t for t in texts if FORBIDDEN.search(t)], " ".join(path)
    rendered = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "250"})
    assert rendered.exit_code == 0
    assert not FORBIDDEN.search(rendered.output), rendered.output


@pytest.mark.parametrize(("path", "cmd"), ALL, ids=IDS)
def test_arguments_are_named_in_capitals(path, cmd):
    # Usage lines once mixed `{config}` and `{IN}`; every positional now has an upper-case name.
    for param in cmd.params:
        if param.param_type_name == "argument":
            assert param.metavar and param.metavar.isupper(), f"{' '.join(path)}: {param.name}"


@pytest.mark.parametrize(("path", "cmd"), ALL, ids=IDS)
def test_every_command_accepts_the_old_spellings(path, cmd):
    assert isinstance(cmd, AliasedCommand), " ".join(path)


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"explore-instruct {__version__}"


def test_old_spellings_reach_the_new_options(tmp_path, capsys):
    # `--processes 0` is `--workers 0`: refused by the check that names the new spelling.
    assert main(["analyze", str(tmp_path), "--out", str(tmp_path / "o"), "--processes", "0"]) == 2
    assert "--workers must be at least 1" in capsys.readouterr().err
    # `--endpoint URL` is `--base-url URL`: without --model the answer command says so.
    q = tmp_path / "q.jsonl"
    q.write_text('{"question": "x", "question_id": 1}\n', encoding="utf-8")
    assert main(["answer", "--questions", str(q), "-o", str(tmp_path / "a.jsonl"), "--endpoint=http://x/v1"]) == 2
    assert "--base-url needs --model" in capsys.readouterr().err


PARAMS = [
    p
    for p in typer.main.get_command(app).commands["answer"].params
    if p.name in ("base_url", "model", "max_new_tokens")
]


def test_rewrite_leaves_values_and_the_rest_alone():
    assert rewrite_old_spellings(["--endpoint", "u", "--max-new-tokens=8"], PARAMS) == [
        "--base-url",
        "u",
        "--max-tokens=8",
    ]
    # An option's value and everything after `--` stay as typed.
    assert rewrite_old_spellings(["--model", "--endpoint", "--", "--endpoint"], PARAMS) == [
        "--model",
        "--endpoint",
        "--",
        "--endpoint",
    ]
    # An old spelling whose new name the command lacks is left for the parser to refuse.
    assert rewrite_old_spellings(["--num", "3"], PARAMS) == ["--num", "3"]
    assert set(OLD_SPELLINGS.values()) <= {n for names, _ in CONCEPTS.values() for n in names}


def test_run_has_every_llm_flag_the_vocabulary_lists():
    # The README's vocabulary names these; `run` once lacked --api-key-env and --max-tokens.
    run_opts = {o for p in options(typer.main.get_command(app).commands["run"]) for o in p.opts}
    for flag in ("--base-url", "--model", "--api-key-env", "--max-tokens", "--max-concurrency", "--sample-size"):
        assert flag in run_opts, flag


@pytest.mark.parametrize(("path", "cmd"), ALL, ids=IDS)
def test_the_run_directory_is_always_the_r_option(path, cmd):
    # `batch status RUN_DIR` once took it as an argument; the old form is still accepted, unlisted.
    shown = [p for p in cmd.params if p.param_type_name == "argument" and not getattr(p, "hidden", False)]
    assert not [p for p in shown if "RUN" in (p.metavar or "")], " ".join(path)
    for param in options(cmd):
        if "--run-dir" in param.opts:
            assert set(param.opts) == {"--run-dir", "-r"}, " ".join(path)


GROUPS = [(), *sorted({path[:-1] for path, _ in ALL if len(path) > 1})]


@pytest.mark.parametrize("path", [path for path, _ in ALL] + GROUPS, ids=IDS + [" ".join(g) or "app" for g in GROUPS])
def test_help_shows_no_type_beside_a_flag(path):
    rendered = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "250"})
    assert rendered.exit_code == 0
    assert "<bool>" not in rendered.output, rendered.output


def test_run_flags_set_the_config_and_a_pasted_key_is_never_echoed(tmp_path, capsys, monkeypatch):
    config = tmp_path / "c.yaml"
    config.write_text("root: {name: Rewriting, description: Rewrite text.}\nllm: {backend: openai, model: m}\n")
    monkeypatch.setenv("MY_KEY", "x")
    # Nothing listens on port 9: the run stops at its first call, its config already written.
    argv = ["run", str(config), "-r", str(tmp_path / "r"), "--base-url", "http://127.0.0.1:9/v1"]
    assert main([*argv, "--max-tokens", "64", "--api-key-env", "MY_KEY"]) == 1
    stored = yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())["llm"]
    assert (stored["max_tokens"], stored["api_key_env"]) == (64, "MY_KEY")
    capsys.readouterr()
    key = "sk-proj-" + "Ab3" * 12
    for argv in (
        ["run", str(config), "--dry-run", "--api-key-env", key],
        ["run", str(config), "--dry-run", "--set", f"llm.api_key_env={key}"],
        ["answer", "--questions", "q", "-o", "a", "--base-url", "http://x/v1", "--model", "m", "--api-key-env", key],
        ["judge", "--questions", "q", "--baseline", "b", "--candidate", "c", "-o", "o", f"--api-key-env={key}"],
    ):
        assert main(argv) == 2, argv
        captured = capsys.readouterr()
        assert "NAME of an environment variable" in captured.err, captured.err
        assert key not in captured.out + captured.err and "sk-proj" not in captured.out + captured.err
