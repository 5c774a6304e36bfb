"""The whole pipeline on the real embedded SmolLM2 model: in-process, and behind llama.cpp's server."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from explore_instruct.cli import main
from explore_instruct.llm.openai_compat import OpenAICompatLLM
from explore_instruct.pipeline import run_stages
from explore_instruct.runstore import RunStore
from tests.helpers import BASE, make_config, merge
from tests.llm_server import LlamaServer, free_port

pytestmark = pytest.mark.integration

SMALL = {
    "domain": "rewriting",
    "explore": {
        "max_depth": 1,
        "breadth": [2],
        "new_per_call": 2,
        "examples_per_subtask": 1,
        "max_fruitless_rounds": 2,
    },
    "generate": {"examples_per_task": [2], "per_call": 2, "max_extra_calls": 0},
    "sample": {"size": 10},
    "llm": {"max_tokens": 600, "max_concurrency": 2, "retries": 1, "temperature": 0.7},
}


@pytest.fixture(scope="module")
def llama_server() -> Iterator[LlamaServer]:
    with LlamaServer.start_or_skip() as server:
        yield server


def assert_ran_every_stage(run_dir: Path) -> None:
    store = RunStore.open(run_dir)
    usage = store.calls.usage_by_stage()
    assert usage["explore"]["calls"] >= 1 and usage["generate"]["calls"] >= 1
    assert len(store.nodes()) >= 2  # the model found at least one subtask
    assert store.examples(origins=["generate"])  # and wrote examples for the tasks
    assert (run_dir / "tree.json").is_file() and (run_dir / "data" / "kept.jsonl").is_file()


def test_cli_run_on_the_embedded_model(tmp_path: Path) -> None:
    config = tmp_path / "small.yaml"
    config.write_text(yaml.safe_dump(merge(BASE, {**SMALL, "llm": {**SMALL["llm"], "backend": "local"}})))
    assert main(["run", str(config), "--run-dir", str(tmp_path / "run")]) == 0
    assert_ran_every_stage(tmp_path / "run")
    # a second run with --resume is served from the cache alone
    assert main(["run", str(config), "--run-dir", str(tmp_path / "run"), "--resume"]) == 0


def test_run_behind_llama_cpp_server(tmp_path: Path, llama_server: LlamaServer, monkeypatch) -> None:
    key = "sk-" + secrets.token_hex(16)
    monkeypatch.setenv("EI_TEST_API_KEY", key)
    cfg = make_config(
        **{
            **SMALL,
            "llm": {
                **SMALL["llm"],
                "backend": "openai",
                "base_url": llama_server.base_url,
                "model": llama_server.model,
                "api_key_env": "EI_TEST_API_KEY",
            },
        }
    )
    backend = OpenAICompatLLM(llama_server.base_url, llama_server.model, api_key_env="EI_TEST_API_KEY")
    run_stages(cfg, tmp_path / "run", backend=backend)
    assert backend.structured_mode == "json_object"  # llama.cpp's server answers 500 to json_schema
    assert_ran_every_stage(tmp_path / "run")
    # the key never reaches the run directory: config, database (cache and call log), exports
    for path in (tmp_path / "run").rglob("*"):
        if path.is_file():
            assert key.encode() not in path.read_bytes(), path


def test_unreachable_endpoint_stops_with_one_line(tmp_path: Path, capsys) -> None:
    config = tmp_path / "c.yaml"
    llm = {"backend": "openai", "base_url": f"http://127.0.0.1:{free_port()}/v1", "model": "m", "retries": 0}
    config.write_text(yaml.safe_dump(merge(BASE, {"llm": llm})))
    assert main(["run", str(config), "--run-dir", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err.strip()
    assert "cannot reach" in err and len(err.splitlines()) == 1
    assert os.environ.get("EI_TEST_API_KEY") is None
