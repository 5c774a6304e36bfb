"""Training: prompt template, batch arithmetic, a tiny random Llama that learns on CPU, masking,
save/reload/answer, LoRA merging, and the errors a user can hit."""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

import pytest

from explore_instruct.cli import main
from explore_instruct.errors import UserError
from explore_instruct.train.config import TrainConfig, resolve_batch
from explore_instruct.train.prompting import build_pairs, build_prompt, to_prompt_completion

pytest.importorskip("trl")
pytest.importorskip("torch")

WORDS = ["apple", "river", "stone", "cloud", "green", "light", "table", "music"]


def _records() -> list[dict[str, str]]:
    return [
        {"instruction": f"Repeat the word {w}.", "input": "twice" if i % 2 else "", "output": f"{w} {w}"}
        for i, w in enumerate(WORDS)
    ]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from explore_instruct.train.tiny import build_tiny_llama

    corpus = [r["instruction"] + " " + r["output"] for r in _records()]
    return build_tiny_llama(tmp_path_factory.mktemp("tiny") / "model", corpus)


@pytest.fixture(scope="module")
def data_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "train.json"
    path.write_text(json.dumps(_records()), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def trained(tiny_model: Path, data_file: Path, tmp_path_factory: pytest.TempPathFactory):
    from explore_instruct.train.sft import train

    out = tmp_path_factory.mktemp("runs") / "trained"
    cfg = TrainConfig(
        data=data_file,
        model=str(tiny_model),
        out=out,
        global_batch_size=8,
        per_device_batch_size=8,
        max_steps=12,
        learning_rate=3e-3,
        warmup_ratio=0.0,
    )
    return train(cfg)


# --- prompt template ---------------------------------------------------------------------------


def test_prompt_with_and_without_input() -> None:
    with_input = build_prompt("Fix the grammar.", "He go home.")
    assert "### Input:\nHe go home.\n\n### Response:\n" in with_input
    assert with_input.startswith("Below is an instruction that describes a task, paired with an input")
    without = build_prompt("Name three colours.", "   ")
    assert "### Input:" not in without
    assert without.endswith("### Instruction:\nName three colours.\n\n### Response:\n")


def test_pairs_and_bad_records() -> None:
    pair = to_prompt_completion({"instruction": "Say hi.", "output": " hi \n"})
    assert pair == {"prompt": build_prompt("Say hi."), "completion": "hi"}
    with pytest.raises(UserError, match="record 1: missing field 'output'"):
        build_pairs([{"instruction": "a", "output": "b"}, {"instruction": "c"}])
    with pytest.raises(UserError, match="'input' is a int"):
        build_pairs([{"instruction": "a", "input": 3, "output": "b"}])
    with pytest.raises(UserError, match="no records"):
        build_pairs([])


# --- batch arithmetic --------------------------------------------------------------------------


def test_global_batch_from_devices() -> None:
    b = resolve_batch(128, 4, 8)
    assert (b.per_device_batch_size, b.gradient_accumulation_steps, b.effective_global_batch_size) == (4, 4, 128)
    assert b.note is None
    one = resolve_batch(128, 4, 1)
    assert one.gradient_accumulation_steps == 32 and one.effective_global_batch_size == 128
    odd = resolve_batch(128, 4, 3)  # 128 is no multiple of 12: round up and say so
    assert odd.effective_global_batch_size == 132 and odd.note
    small = resolve_batch(8, 16, 1)  # the per-device batch never exceeds the global one
    assert (small.per_device_batch_size, small.gradient_accumulation_steps) == (8, 1)


def test_paper_defaults() -> None:
    cfg = TrainConfig(data=Path("d.json"), model="m", out=Path("o"))
    assert (cfg.learning_rate, cfg.global_batch_size, cfg.epochs, cfg.max_length) == (2e-5, 128, 3.0, 512)
    assert (cfg.weight_decay, cfg.warmup_ratio, cfg.lr_scheduler, cfg.optim) == (0.0, 0.03, "cosine", "auto")
    assert cfg.precision == "auto"


# --- real training on a tiny model --------------------------------------------------------------


@pytest.mark.slow
def test_tiny_llama_loss_falls_and_outputs_are_complete(trained) -> None:
    assert len(trained.losses) == 12
    assert trained.losses[-1] < 0.8 * trained.losses[0]
    out = trained.out
    for name in ("config.json", "model.safetensors", "tokenizer.json", "train_log.jsonl", "train_settings.json"):
        assert (out / name).is_file(), name
    assert not (out.parent / f".{out.name}.partial").exists()
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    steps = [e["step"] for e in log if "loss" in e]
    assert steps == list(range(1, 13))
    from transformers import AutoTokenizer

    from explore_instruct.train.prompting import question_prompt

    chat = AutoTokenizer.from_pretrained(out).apply_chat_template(
        [{"role": "user", "content": "Name a colour."}], tokenize=False, add_generation_prompt=True
    )
    assert chat == question_prompt("Name a colour.")  # a chat endpoint serving it sends the training prompt
    settings = json.loads((out / "train_settings.json").read_text())
    assert settings["batch"]["effective_global_batch_size"] == 8
    assert settings["precision"] == "fp32" and settings["device"] == "cpu"
    assert settings["result"]["global_steps"] == 12


@pytest.mark.slow
def test_saved_model_reloads_and_answers(trained, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(trained.out)
    assert model.config.model_type == "llama"
    questions = tmp_path / "q.jsonl"
    questions.write_text(
        "".join(
            json.dumps({"question_id": f"q{i}", "question": f"Repeat the word {w}.", "std_answer": "", "class": "demo"})
            + "\n"
            for i, w in enumerate(WORDS[:3])
        ),
        encoding="utf-8",
    )
    answers = tmp_path / "a.jsonl"
    code = main(
        [
            "answer",
            "--questions",
            str(questions),
            "--model",
            str(trained.out),
            "--out",
            str(answers),
            "--max-new-tokens",
            "6",
            "--batch-size",
            "2",
        ]
    )
    assert code == 0
    rows = [json.loads(line) for line in answers.read_text().splitlines()]
    assert [r["question_id"] for r in rows] == ["q0", "q1", "q2"]
    for r in rows:
        assert isinstance(r["answer"], str) and r["class"] == "demo"
        assert r["model_id"] == str(trained.out)
        assert r["settings"]["max_new_tokens"] == 6 and r["settings"]["prompt_format"] == "alpaca"


def test_prompt_tokens_carry_no_loss(tiny_model: Path, data_file: Path, tmp_path: Path) -> None:
    """In the batches the trainer really gets (packed rows), each example's prompt tokens and the
    padding carry no loss; exactly its response and the end-of-sequence token do."""
    from explore_instruct.train.sft import prepare

    cfg = TrainConfig(data=data_file, model=str(tiny_model), out=tmp_path / "m", max_steps=1, global_batch_size=8)
    prepared = prepare(cfg)
    tokenizer = prepared.tokenizer
    batch = next(iter(prepared.trainer.get_train_dataloader()))
    assert "position_ids" in batch and "attention_mask" not in batch
    prompts = {build_prompt(r["instruction"], r["input"]): r["output"] for r in _records()}
    seen = []
    for ids, labels, positions in zip(batch["input_ids"], batch["labels"], batch["position_ids"], strict=True):
        starts = [k for k, p in enumerate(positions.tolist()) if p == 0] + [len(ids)]
        for a, b in itertools.pairwise(starts):
            text = tokenizer.decode(ids[a:b])
            prompt = next((p for p in prompts if text.startswith(p)), None)
            if prompt is None:  # the padding that ends a row
                assert (labels[a:b] == -100).all(), "padding carries loss"
                continue
            prompt_len = len(tokenizer(prompt)["input_ids"])
            assert (labels[a : a + prompt_len] == -100).all(), "a prompt token carries loss"
            trained_ids = [t for t in labels[a + prompt_len : b].tolist() if t != -100]
            assert tokenizer.decode(trained_ids) == prompts[prompt] + tokenizer.eos_token
            seen.append(prompt)
    assert sorted(seen) == sorted(prompts)


@pytest.mark.slow
def test_lora_saves_a_merged_plain_model(tiny_model: Path, data_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "lora"
    code = main(
        [
            "train",
            "--data",
            str(data_file),
            "--model",
            str(tiny_model),
            "--out",
            str(out),
            "--lora",
            "--lora-r",
            "4",
            "--max-steps",
            "2",
            "--global-batch-size",
            "4",
            "--per-device-batch-size",
            "4",
        ]
    )
    assert code == 0
    assert (out / "model.safetensors").is_file()
    assert not (out / "adapter_config.json").exists()
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(out)
    assert not any("lora" in name for name, _ in model.named_parameters())
    assert json.loads((out / "train_settings.json").read_text())["config"]["lora"] is True


# --- errors -------------------------------------------------------------------------------------


def test_bad_data_and_existing_output_are_one_line_errors(
    tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "x"}\n', encoding="utf-8")
    code = main(["train", "--data", str(bad), "--model", str(tiny_model), "--out", str(tmp_path / "o")])
    assert code == 2
    assert "record 0: missing field 'output'" in capsys.readouterr().err

    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "x").write_text("keep me")
    good = tmp_path / "good.json"
    good.write_text(json.dumps(_records()), encoding="utf-8")
    assert main(["train", "--data", str(good), "--model", str(tiny_model), "--out", str(taken)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (taken / "x").read_text() == "keep me"

    assert main(["train", "--data", str(good), "--model", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "not a model folder" in capsys.readouterr().err


def test_a_diverging_run_stops_with_one_line_and_saves_nothing(
    tiny_model: Path, data_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """lr 1e30: the first update blows the weights up, so step 2's gradient norm is NaN. transformers
    would have logged that step's loss as 0.0; the run stops there instead, exit 1, no folder."""
    out = tmp_path / "out"
    args = ["train", "--data", str(data_file), "--model", str(tiny_model), "--out", str(out), "--lr", "1e30"]
    code = main([*args, "--max-steps", "4", "--global-batch-size", "8", "--warmup-ratio", "0"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert "training diverged at step 2: " in err[-1] and "nan" in err[-1] and "lower the learning rate" in err[-1]
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # neither the model nor its .partial folder


def test_missing_train_extra_names_the_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "trl", None)  # makes `import trl` raise ImportError
    code = main(["train", "--data", str(tmp_path / "d.json"), "--model", "m", "--out", str(tmp_path / "o")])
    assert code == 2
    err = capsys.readouterr().err
    from explore_instruct.installation import install_command

    assert install_command(["train"]) in err and "trl" in err  # the line that works for this installation


def test_deepspeed_configs_are_shipped() -> None:
    import yaml

    from explore_instruct.train.sft import shipped_config

    ds = json.loads(shipped_config("deepspeed_zero3.json").read_text())
    assert ds["zero_optimization"]["stage"] == 3
    assert ds["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True
    acc = yaml.safe_load(shipped_config("accelerate_zero3.yaml").read_text())
    assert acc["distributed_type"] == "DEEPSPEED" and acc["deepspeed_config"]["zero_stage"] == 3


def test_deepspeed_without_the_package_is_a_clear_error(
    tiny_model: Path, data_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        import deepspeed  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("deepspeed is installed here")
    code = main(
        [
            "train",
            "--data",
            str(data_file),
            "--model",
            str(tiny_model),
            "--out",
            str(tmp_path / "o"),
            "--deepspeed",
            "zero3",
        ]
    )
    assert code == 2
    assert "pip install deepspeed" in capsys.readouterr().err


@pytest.mark.integration
@pytest.mark.slow
def test_embedded_smollm2_gguf_answers(tmp_path: Path) -> None:
    """The embedded GGUF loads as a dense transformers model and answers with the Alpaca prompt."""
    from explore_instruct.train.models import EMBEDDED, resolve_source

    try:
        resolve_source(EMBEDDED)
    except UserError as exc:
        pytest.skip(str(exc))
    pytest.importorskip("gguf")
    questions = tmp_path / "q.jsonl"
    questions.write_text(
        json.dumps(
            {"question_id": "g1", "question": "What is the capital of France?", "std_answer": "", "class": "demo"}
        )
        + "\n",
        encoding="utf-8",
    )
    out = tmp_path / "a.jsonl"
    assert (
        main(["answer", "--questions", str(questions), "--model", EMBEDDED, "--out", str(out), "--max-new-tokens", "8"])
        == 0
    )
    row = json.loads(out.read_text())
    assert row["model_id"].endswith(".gguf") and row["answer"].strip()


def test_off_a_terminal_training_prints_step_lines_not_log_dicts(
    tiny_model: Path, data_file: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    # stdout and stderr are files here: transformers would print {'loss': ...} dicts on stdout.
    argv = ["train", "--data", str(data_file), "--model", str(tiny_model), "--out", str(tmp_path / "m")]
    assert main([*argv, "--max-steps", "2", "--global-batch-size", "4", "--per-device-batch-size", "4"]) == 0
    captured = capfd.readouterr()
    assert "'loss'" not in captured.out and "'loss'" not in captured.err
    assert captured.out.strip() == str(tmp_path / "m")  # stdout: the model folder, nothing else
    assert "train: step 1/2 loss " in captured.err and "train: step 2/2 loss " in captured.err
