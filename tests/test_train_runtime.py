"""Per-device training choices: the token budget from free GPU memory, gradient checkpointing only
when memory requires it, CPU defaults, kernels, and the errors a user can hit."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from explore_instruct.cli import main
from explore_instruct.errors import UserError
from explore_instruct.train.config import TrainConfig
from explore_instruct.train.runtime import GIB, activation_bytes_per_token, auto_token_budget, choose

# A Llama-shaped 1.1B model (TinyLlama's shape) with the embedded tokenizer's vocabulary.
SHAPE = SimpleNamespace(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, vocab_size=49152)
PARAMS = 1_100_000_000


def test_budget_grows_with_free_memory_and_holds_at_least_a_row() -> None:
    h100 = auto_token_budget(SHAPE, PARAMS, PARAMS, 512, free=79 * GIB, total=80 * GIB, shards=1, half=True)
    h200 = auto_token_budget(SHAPE, PARAMS, PARAMS, 512, free=139 * GIB, total=140 * GIB, shards=1, half=True)
    assert 512 <= h100[0] < h200[0]
    assert h100[1] is False and h200[1] is False  # no gradient checkpointing needed
    assert "GiB free" in h100[2]


def test_checkpointing_only_when_a_row_does_not_fit_without_it() -> None:
    states = 1_100_000_000 * 18
    per_token = activation_bytes_per_token(SHAPE, checkpointing=False, half=True)
    # Room for half a row of activations without checkpointing (plus the reserve of 10 % + 1 GiB).
    free = states + 2 * GIB + 256 * per_token
    budget, checkpointing, reason = auto_token_budget(
        SHAPE, PARAMS, PARAMS, 512, free=free, total=10 * GIB, shards=1, half=True
    )
    assert checkpointing and budget >= 512 and "gradient checkpointing" in reason
    # Sharding the model states over 8 devices (ZeRO-3) leaves room enough without it.
    assert auto_token_budget(SHAPE, PARAMS, PARAMS, 512, free=free, total=10 * GIB, shards=8, half=True)[1] is False


def test_cpu_keeps_the_padded_memory_ceiling_and_plain_pytorch(tmp_path: Path) -> None:
    cfg = TrainConfig(data=tmp_path / "d.json", model="m", out=tmp_path / "o", batching="grouped")
    choice = choose(
        cfg, SHAPE, params=PARAMS, probe_model=None, cuda=False, precision="fp32", world_size=1, deepspeed=False
    )
    assert choice.max_tokens_per_batch == 4 * 512 and "CPU" in choice.budget_reason
    assert (choice.optim, choice.liger, choice.gradient_checkpointing) == ("adamw_torch", False, False)
    assert choice.batching == "grouped" and choice.batching_reason == "given"
    # Without a loaded model (DeepSpeed loads it later) auto falls back on the library's support.
    cfg.batching = "auto"
    choice = choose(
        cfg, SHAPE, params=PARAMS, probe_model=None, cuda=False, precision="fp32", world_size=1, deepspeed=True
    )
    assert choice.batching == "packed"


def test_liger_asked_for_but_missing_is_a_clear_error(tmp_path: Path) -> None:
    import importlib.util

    if importlib.util.find_spec("liger_kernel") is not None:
        pytest.skip("liger-kernel is installed here")
    cfg = TrainConfig(data=tmp_path / "d.json", model="m", out=tmp_path / "o", batching="padded", liger=True)
    with pytest.raises(UserError, match=r"explore-instruct\[gpu\]"):
        choose(cfg, SHAPE, params=PARAMS, probe_model=None, cuda=True, precision="bf16", world_size=1, deepspeed=False)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--max-tokens-per-batch", "100"], "--max-tokens-per-batch must be at least --max-length"),
        (["--batching", "zigzag"], "--batching must be one of auto, packed, grouped, padded"),
    ],
)
def test_bad_batching_options_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    pytest.importorskip("trl")
    data = tmp_path / "d.json"
    data.write_text(json.dumps([{"instruction": "a", "output": "b"}]), encoding="utf-8")
    code = main(["train", "--data", str(data), "--model", str(tmp_path), "--out", str(tmp_path / "o"), *args])
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_parameters_are_counted_from_the_config_alone(tmp_path: Path) -> None:
    """Under DeepSpeed the budget is chosen before the weights load: from the config, on the meta device."""
    pytest.importorskip("transformers")
    from explore_instruct.train.models import ModelSource, count_parameters, load_config, load_model
    from explore_instruct.train.tiny import build_tiny_llama

    src = ModelSource(str(build_tiny_llama(tmp_path / "m", ["a few words of text"])))
    model = load_model(src)
    assert count_parameters(load_config(src)) == sum(p.numel() for p in model.parameters())
