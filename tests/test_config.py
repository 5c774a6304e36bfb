from pathlib import Path

import pytest

from explore_instruct.cli import main
from explore_instruct.config import RunConfig, load_config, looks_like_key, per_depth
from explore_instruct.errors import UserError


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "cfg.yaml"
    p.write_text(text)
    return p


def test_paper_defaults():
    cfg = RunConfig.model_validate({"root": {"name": "Math"}})
    assert cfg.explore.max_depth == 2
    assert cfg.explore.breadth == [8, 6]
    assert cfg.explore.new_per_call == 5
    assert cfg.explore.examples_per_subtask == 2
    assert cfg.generate.per_call == 10 and cfg.generate.demonstrations == 2
    assert cfg.prune.threshold == 0.7 and cfg.filter.threshold == 0.7
    assert cfg.sample.size == 10_000
    assert cfg.llm.temperature == 1.0 and cfg.llm.top_p == 1.0
    assert cfg.llm.backend == "local"


def test_per_depth_reuses_last_value():
    assert [per_depth([8, 6], d) for d in range(4)] == [8, 6, 6, 6]


def test_unknown_field_is_named(tmp_path):
    p = write(tmp_path, "root: {name: X}\nexplore:\n  max_dept: 3\n")
    with pytest.raises(UserError, match=r"cfg.yaml: explore.max_dept: Extra inputs"):
        load_config(p)


def test_bad_value_is_named(tmp_path):
    p = write(tmp_path, "root: {name: X}\nexplore:\n  breadth: [8, 0]\n")
    with pytest.raises(UserError, match=r"explore.breadth"):
        load_config(p)


def test_yaml_syntax_error_names_line(tmp_path):
    p = write(tmp_path, "root: {name: X}\nexplore: [\n")
    with pytest.raises(UserError, match=r"not valid YAML \(line \d+\)"):
        load_config(p)


def test_root_or_seed_tree_required(tmp_path):
    with pytest.raises(UserError, match="exactly one of 'root'"):
        load_config(write(tmp_path, "domain: math\n"))


def test_api_key_in_config_is_refused(tmp_path):
    p = write(tmp_path, "root: {name: X}\nllm: {backend: openai, model: m, api_key_env: sk-abcdefghijklmnop}\n")
    with pytest.raises(UserError, match=r"llm\.api_key_env"):
        load_config(p)


@pytest.mark.parametrize("name", ["OPENAI_API_KEY", "HF_TOKEN", "my_key_2", "_KEY", "AZURE_OPENAI_API_KEY_FOR_PROD_2"])
def test_variable_names_are_taken(name):
    assert not looks_like_key(name)


@pytest.mark.parametrize(
    "value", ["sk-proj-abc", "sk_live_abc", "hf_AbCdEf", "ghp_abc", "AIzaSyAbc", "a b", "x=y", "Ab1" * 11, "1KEY"]
)
def test_keys_are_told_from_names(value):
    assert looks_like_key(value)


def test_an_endpoint_backend_never_repeats_a_pasted_key():
    from explore_instruct.llm.openai_compat import OpenAICompatLLM

    key = "sk-proj-" + "x" * 20
    with pytest.raises(UserError) as err:
        OpenAICompatLLM("http://127.0.0.1:9/v1", "m", api_key_env=key)
    assert "NAME of an environment variable" in str(err.value) and "sk-proj" not in str(err.value)


def test_overrides_apply_before_validation(tmp_path):
    p = write(tmp_path, "root: {name: X}\n")
    cfg = load_config(p, {"explore.breadth": [4, 3], "llm.max_concurrency": 2})
    assert cfg.explore.breadth == [4, 3] and cfg.llm.max_concurrency == 2


def test_seed_tree_resolved_relative_to_config(tmp_path, upstream_tree):
    p = write(tmp_path, f"seed_tree: {upstream_tree}\n")
    assert Path(load_config(p).seed_tree) == upstream_tree.resolve()
    with pytest.raises(UserError, match="seed_tree"):
        load_config(write(tmp_path, "seed_tree: nowhere\n"))


def test_cli_bad_config_exits_2_and_writes_nothing(tmp_path, capsys):
    p = write(tmp_path, "root: {name: X}\ngenerate: {per_call: 0}\n")
    run_dir = tmp_path / "run"
    assert main(["run", str(p), "--run-dir", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert "generate.per_call" in err and len(err.strip().splitlines()) == 1
    assert not run_dir.exists()


def test_shipped_example_configs_validate():
    configs = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))
    assert {c.stem for c in configs} >= {"rewriting", "brainstorming", "math", "generic", "demo"}
    for c in configs:
        load_config(c)
