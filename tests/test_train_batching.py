"""Token-budget batches: the plan's invariants, and that packed or grouped micro-batches give every
example exactly the loss it gets alone (and the global batch exactly the padded trainer's gradient)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from explore_instruct.train.batching import (
    PlanSettings,
    micro_batch_tokens,
    pack_rows,
    pack_rows_evenly,
    padded_stats,
    plan_epochs,
    plan_stats,
    shuffled_steps,
)
from explore_instruct.train.config import TrainConfig, total_steps, warmup_steps


def _lengths(n: int = 500, seed: int = 1) -> list[int]:
    rng = random.Random(seed)
    return [rng.randint(40, 300) for _ in range(n)]


# --- the plan (pure) -----------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["packed", "grouped"])
@pytest.mark.parametrize("world_size", [1, 3])
def test_plan_keeps_the_paper_steps_and_the_budget(layout: str, world_size: int) -> None:
    lengths = _lengths()
    settings = PlanSettings(layout, 128, world_size, 512, 2048, seed=7)  # type: ignore[arg-type]
    plan = plan_epochs(lengths, settings, epochs=2)
    for epoch, planned in enumerate(plan.epochs):
        expected = shuffled_steps(len(lengths), 128, 7, epoch)
        assert len(planned.steps) == len(expected)
        for k, (step, examples) in enumerate(zip(planned.steps, expected, strict=True)):
            # The same examples per optimizer step as a padded trainer, each exactly once.
            assert sorted(i for mb in step for row in mb for i in row) == sorted(examples)
            last = k == len(expected) - 1 and len(lengths) % 128
            assert len(step) == (plan.last_step_accumulation if last else plan.accumulation) * world_size
            for mb in step:
                assert all(sum(lengths[i] for i in row) <= 512 for row in mb)
                assert micro_batch_tokens(mb, lengths)[1] <= 2048
    assert plan.micro_batches_per_epoch == sum(len(s) for s in plan.epochs[0].steps) // world_size


def test_packing_pads_far_less_than_padded_batches() -> None:
    lengths = _lengths(2000)
    padded = padded_stats(lengths, 128, 4, seed=3)
    for budget in (2048, 65536):  # many micro-batches per step, or one
        plan = plan_epochs(lengths, PlanSettings("packed", 128, 1, 512, budget, 3), epochs=1)
        packed = plan_stats(plan.epochs[0].steps, lengths)
        assert packed.real_tokens == padded.real_tokens == sum(lengths)
        assert packed.padding_fraction < 0.05 < padded.padding_fraction


def test_even_packing_fills_rows_evenly() -> None:
    lengths = _lengths(128, seed=5)
    plain = pack_rows(range(128), lengths, 512)
    even = pack_rows_evenly(range(128), lengths, 512)
    assert sorted(i for r in even for i in r) == list(range(128))
    assert all(sum(lengths[i] for i in r) <= 512 for r in even)

    def waste(rows: list[list[int]]) -> int:
        widths = [sum(lengths[i] for i in r) for r in rows]
        return len(widths) * max(widths) - sum(widths)

    assert waste(even) < waste(plain)


def test_a_short_final_step_smaller_than_the_devices_is_dropped() -> None:
    plan = plan_epochs([50] * 10, PlanSettings("packed", 4, 3, 64, 64, 0), epochs=1)
    assert len(plan.epochs[0].steps) == 2  # 4 + 4; the last 2 examples cannot feed 3 devices
    assert plan.last_step_accumulation == 0


def test_warmup_is_whole_steps_of_the_real_optimizer_steps() -> None:
    assert warmup_steps(0.03, total_steps(35, 3.0, -1)) == 4  # ceil(0.03 x 105)
    assert warmup_steps(0.03, total_steps(35, 3.0, 10)) == 1
    assert warmup_steps(0.0, 100) == 0


# --- equivalence on a tiny random Llama ----------------------------------------------------------

pytest.importorskip("trl")
torch = pytest.importorskip("torch")

WORDS = ["apple", "river", "stone", "cloud", "green", "light", "table", "music", "paper", "glass"]


def _records() -> list[dict[str, str]]:
    return [
        {
            "instruction": f"Repeat the word {w} " + "slowly " * (i % 4),
            "input": "twice" if i % 3 == 0 else "",
            "output": " ".join([w] * (1 + i % 5)),
        }
        for i, w in enumerate(WORDS * 2)
    ]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    from explore_instruct.train.models import ModelSource, load_model, load_tokenizer
    from explore_instruct.train.prompting import build_pairs
    from explore_instruct.train.tiny import build_tiny_llama
    from explore_instruct.train.tokenize import tokenize_pairs

    records = _records()
    folder = build_tiny_llama(tmp_path_factory.mktemp("tiny") / "m", [r["instruction"] + r["output"] for r in records])
    src = ModelSource(str(folder))
    tokenizer = load_tokenizer(src)
    model = load_model(src, dtype=torch.float32)
    model.config.use_cache = False
    examples = tokenize_pairs(build_pairs(records), tokenizer, 512).examples
    data = tmp_path_factory.mktemp("data") / "train.json"
    data.write_text(json.dumps(records), encoding="utf-8")
    return folder, tokenizer, model, examples, data


def _token_losses(model, batch: dict) -> torch.Tensor:
    """Cross-entropy of every position's next-token label (0 where ignored), shape rows x (width - 1)."""
    logits = model(**{k: v for k, v in batch.items() if k != "labels"}, use_cache=False).logits.float()
    labels = batch["labels"][:, 1:]
    ce = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.size(-1)), labels.reshape(-1), ignore_index=-100, reduction="none"
    )
    return ce.view(labels.shape)


def _alone(model, example: dict) -> float:
    ids = torch.tensor([example["input_ids"]])
    losses = _token_losses(model, {"input_ids": ids, "labels": torch.tensor([example["labels"]])})
    return (losses.sum() / (torch.tensor(example["labels"][1:]) != -100).sum()).item()


def _collate(examples: list[dict], rows: list[list[int]], layout: str, pad_id: int) -> dict:
    from explore_instruct.train.loader import RowCollator

    tagged = [{**examples[i], "row": r} for r, row in enumerate(rows) for i in row]
    return RowCollator(pad_id, layout)(tagged)  # type: ignore[arg-type]


@pytest.mark.parametrize("layout", ["packed", "grouped"])
def test_per_example_losses_equal_the_example_alone(tiny, layout: str) -> None:
    """Every example's mean completion-token loss inside a micro-batch equals its loss alone.
    Tolerance 1e-5 (fp32 on CPU: only the summation order of the attention differs)."""
    _, tokenizer, model, examples, _ = tiny
    lengths = [len(e["input_ids"]) for e in examples]
    plan = plan_epochs(lengths, PlanSettings(layout, len(examples), 1, 128, 256, 0), epochs=1)  # type: ignore[arg-type]
    assert plan.accumulation > 1
    if layout == "packed":
        assert any(len(row) > 1 for mb in plan.epochs[0].steps[0] for row in mb), "nothing was packed"
    seen = []
    with torch.no_grad():
        for mb in plan.epochs[0].steps[0]:
            batch = _collate(examples, mb, layout, tokenizer.pad_token_id)
            losses = _token_losses(model, batch)
            for r, row in enumerate(mb):
                start = 0
                for i in row:
                    n = lengths[i]
                    labels = batch["labels"][r, start + 1 : start + n]
                    inside = losses[r, start : start + n - 1].sum() / (labels != -100).sum()
                    assert inside.item() == pytest.approx(_alone(model, examples[i]), abs=1e-5)
                    seen.append(i)
                    start += n
                # Nothing past the example's end carries loss (the next example's prompt, or padding).
                assert (batch["labels"][r, start:] == -100).all()
    assert sorted(seen) == list(range(len(examples)))


def test_accumulated_gradient_equals_the_padded_global_batch(tiny) -> None:
    """Micro-batches with the loss summed per completion token and divided by the global batch's
    completion tokens give the gradient of one padded batch averaged over its completion tokens."""
    _, tokenizer, model, examples, _ = tiny
    lengths = [len(e["input_ids"]) for e in examples]
    everyone = [[i] for i in range(len(examples))]
    padded = _collate(examples, everyone, "grouped", tokenizer.pad_token_id)
    model.zero_grad()
    loss = _token_losses(model, padded)
    (loss.sum() / (padded["labels"][:, 1:] != -100).sum()).backward()
    reference = {n: p.grad.clone() for n, p in model.named_parameters()}

    model.zero_grad()
    plan = plan_epochs(lengths, PlanSettings("packed", len(examples), 1, 128, 256, 0), epochs=1)
    micro = [_collate(examples, mb, "packed", tokenizer.pad_token_id) for mb in plan.epochs[0].steps[0]]
    total = sum(int((b["labels"][:, 1:] != -100).sum()) for b in micro)
    for batch in micro:
        (_token_losses(model, batch).sum() / total).backward()
    for name, param in model.named_parameters():
        scale = reference[name].abs().max().item()
        assert (param.grad - reference[name]).abs().max().item() <= 1e-5 * max(scale, 1e-3), name
    model.zero_grad()


def test_tokenization_matches_trl(tiny, tmp_path: Path) -> None:
    """The examples handed to the trainer are what TRL's own preparation makes of the same pairs."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from explore_instruct.train.models import ModelSource, load_model
    from explore_instruct.train.prompting import build_pairs

    folder, tokenizer, _, examples, _ = tiny
    args = SFTConfig(
        output_dir=str(tmp_path), max_length=512, completion_only_loss=True, report_to="none", use_cpu=True, bf16=False
    )
    trainer = SFTTrainer(
        model=load_model(ModelSource(str(folder))),  # a copy: the trainer patches the model's forward
        args=args,
        train_dataset=Dataset.from_list(build_pairs(_records())),
        processing_class=tokenizer,
    )
    theirs = [{"input_ids": r["input_ids"], "labels": r["labels"]} for r in trainer.train_dataset]
    assert theirs == examples


def test_probe_detects_attention_that_crosses_boundaries(tiny, monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import masking_utils

    from explore_instruct.train.runtime import packing_respects_boundaries

    _, _, model, _, _ = tiny
    assert packing_respects_boundaries(model)
    monkeypatch.setattr(masking_utils, "find_packed_sequence_indices", lambda position_ids: None)
    assert not packing_respects_boundaries(model)


# --- through the trainer -------------------------------------------------------------------------


def _train(tiny, tmp_path: Path, name: str, **overrides):
    from explore_instruct.train.sft import train

    folder, _, _, _, data = tiny
    cfg = TrainConfig(
        data=data,
        model=str(folder),
        out=tmp_path / name,
        learning_rate=1e-3,
        warmup_ratio=0.0,
        max_length=128,
        **overrides,
    )
    return train(cfg)


@pytest.mark.slow
def test_trainer_consumes_the_plan_exactly_and_matches_the_padded_trainer(tiny, tmp_path: Path) -> None:
    _, _, _, examples, _ = tiny
    packed = _train(tiny, tmp_path, "packed", global_batch_size=len(examples), epochs=2, max_tokens_per_batch=256)
    s = packed.settings
    assert s["batch"]["layout"] == "packed" and s["batch"]["gradient_accumulation_steps"] > 1
    assert s["runtime"]["batching_reason"].startswith("probe")
    # Every micro-batch of both epochs went through the model once: all real tokens, twice.
    assert s["result"]["real_tokens"] == 2 * sum(len(e["input_ids"]) for e in examples)
    assert s["result"]["global_steps"] == 2 and s["result"]["tokens_per_second"] > 0
    assert s["result"]["padding_fraction"] == s["batch"]["planned_padding_fraction"]

    padded = _train(tiny, tmp_path, "padded", global_batch_size=len(examples), epochs=2, batching="padded")
    assert padded.settings["batch"]["layout"] == "padded"
    assert padded.settings["result"]["padding_fraction"] > s["result"]["padding_fraction"]
    # Same examples per step, same loss normalisation: the same losses, step by step.
    assert packed.losses == pytest.approx(padded.losses, rel=1e-4)


def test_warmup_steps_reach_the_trainer(tiny, tmp_path: Path) -> None:
    from explore_instruct.train.sft import prepare

    folder, _, _, _, data = tiny
    cfg = TrainConfig(data=data, model=str(folder), out=tmp_path / "w", global_batch_size=4, max_steps=12)
    cfg.warmup_ratio = 0.25
    prepared = prepare(cfg)
    assert prepared.settings.schedule == {"optimizer_steps": 12, "warmup_steps": 3}
    trainer = prepared.trainer
    trainer.create_optimizer_and_scheduler(num_training_steps=12)
    factors = [trainer.lr_scheduler.lr_lambdas[0](k) for k in range(5)]
    assert factors[:4] == pytest.approx([0, 1 / 3, 2 / 3, 1.0])
    assert factors[4] < 1.0
