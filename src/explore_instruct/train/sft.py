"""Supervised fine-tuning with TRL's SFTTrainer on Alpaca records, loss on the response only.

The examples are tokenized first (`tokenize.py`), so their lengths plan the batches before the trainer
exists: packed or length-grouped micro-batches under a token budget, with the gradient accumulation the
plan needs for 128-example steps (`batching.py`, `loader.py`); the per-device choices (budget, layout,
checkpointing, optimizer, kernels) come from `runtime.py`. `--batching padded` keeps TRL's own padded
batches of `--per-device-batch-size` rows.

Output: a Hugging Face model folder (weights, config, tokenizer) that transformers and vLLM load,
its tokenizer's chat template set to the Alpaca prompt (so a chat endpoint serving the model sends
it exactly what it was trained on),
`train_log.jsonl` (what the trainer logged at every step: loss, learning rate, grad norm) and
`train_settings.json` (the resolved settings). Everything is written into a `.partial` folder that
is renamed to `--out` at the end, so a crashed run never leaves something that looks finished.
A NaN or infinite loss or gradient norm stops the run with `TrainingDiverged` (`divergence.py`)
and removes the `.partial` folder: a diverged run saves nothing.

Multi-GPU / multi-node: `accelerate launch --config_file <accelerate_zero3.yaml> -m
explore_instruct.train.sft --data ... --model ... --out ...` (the arguments of `explore-instruct train`).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from explore_instruct.datafile import atomic_write_text, read_records
from explore_instruct.errors import UserError
from explore_instruct.train import runtime
from explore_instruct.train.batching import Plan, PlanSettings, padded_stats, plan_epochs, plan_stats
from explore_instruct.train.config import ResolvedSettings, TrainConfig, resolve_batch, total_steps, warmup_steps
from explore_instruct.train.deps import TRAIN_MODULES, require
from explore_instruct.train.divergence import TrainingDiverged, divergence_guard
from explore_instruct.train.loader import CountingCollator, PlanSampler, RowCollator, RowTaggedDataset, TokenMeter
from explore_instruct.train.models import (
    ModelSource,
    count_parameters,
    load_config,
    load_model,
    load_tokenizer,
    resolve_source,
)
from explore_instruct.train.prompting import alpaca_chat_template, build_pairs
from explore_instruct.train.runtime import RuntimeChoice
from explore_instruct.train.tokenize import tokenize_pairs

if TYPE_CHECKING:  # torch, transformers and peft are imported only when a model trains
    import torch
    from peft import LoraConfig
    from torch.utils.data import DataLoader, Dataset
    from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

SETTINGS_FILE = "train_settings.json"
LOG_FILE = "train_log.jsonl"
SHIPPED = Path(__file__).resolve().parent


@dataclass
class TrainResult:
    out: Path
    settings: dict[str, Any]
    losses: list[float]  # training loss per logged step, in order
    seconds: float
    main_process: bool = True  # False on the other ranks of a multi-process launch


def shipped_config(name: str) -> Path:
    """A config file shipped with the package: `deepspeed_zero3.json` or `accelerate_zero3.yaml`."""
    return SHIPPED / name


def _require_deepspeed(value: str | None) -> None:
    """DeepSpeed is GPU-only and not part of the [train] extra: say how to get it."""
    wanted = value is not None or os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() in ("1", "true")
    if not wanted:
        return
    try:
        import deepspeed  # noqa: F401
    except ImportError:
        raise UserError(
            "DeepSpeed was asked for but is not installed: pip install deepspeed (on the GPU machines that run the job)"
        ) from None


def _deepspeed_path(value: str | None) -> str | None:
    if value is None:
        return None
    if value == "zero3":
        return str(shipped_config("deepspeed_zero3.json"))
    if not Path(value).is_file():
        raise UserError(
            f"deepspeed {value}: no such file (or use 'zero3' for the shipped config)", settings=("deepspeed",)
        )
    return value


def world_size() -> int:
    """Data-parallel devices: the launcher's WORLD_SIZE, else every visible GPU (the Trainer then
    splits batches over them), else 1 (CPU)."""
    import torch

    launched = int(os.environ.get("WORLD_SIZE", "0") or 0)
    if launched:
        return launched
    return max(1, torch.cuda.device_count()) if torch.cuda.is_available() else 1


def resolve_precision(requested: str) -> str:
    """bf16 where the GPU supports it ("auto"), else fp32; an explicit choice is checked."""
    import torch

    has_bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if requested == "auto":
        return "bf16" if has_bf16 else "fp32"
    if requested == "bf16" and not has_bf16:
        raise UserError("precision bf16: no GPU with bf16 support here (use auto or fp32)", settings=("precision",))
    if requested == "fp16" and not torch.cuda.is_available():
        raise UserError("precision fp16 needs a GPU (use auto or fp32)", settings=("precision",))
    return requested


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("explore-instruct", *TRAIN_MODULES, "deepspeed"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise UserError(
            f"{out}: already exists and is not empty (pass overwrite to replace it)", settings=("overwrite",)
        )


def load_pairs(cfg: TrainConfig) -> list[dict[str, str]]:
    records, _ = read_records(cfg.data)
    if cfg.max_examples is not None:
        records = records[: cfg.max_examples]
    return build_pairs(records, str(cfg.data))


def _step_logger(path: Path, losses: list[float], *, lines: bool) -> TrainerCallback:
    """Logs every step to `path`; with `lines` (no progress bar: not a terminal), also a plain line on
    stderr each tenth of the steps, in place of the log dicts transformers would print on stdout."""
    from transformers import TrainerCallback

    class StepLog(TrainerCallback):
        """Appends every log event of the main process to `train_log.jsonl` as it happens."""

        def on_log(
            self,
            args: TrainingArguments,
            state: TrainerState,
            control: TrainerControl,
            logs: dict[str, Any] | None = None,
            **kwargs: Any,
        ) -> None:
            if not state.is_world_process_zero or not _is_main_process() or not logs:
                return
            if "loss" in logs:
                losses.append(float(logs["loss"]))
                every = max(1, state.max_steps // 10)
                if lines and (state.global_step % every == 0 or state.global_step == state.max_steps):
                    line = f"train: step {state.global_step}/{state.max_steps} loss {float(logs['loss']):.4f}"
                    print(line, file=sys.stderr, flush=True)
            with path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps({"step": state.global_step, "epoch": state.epoch, **logs}) + "\n")

    return StepLog()


def _lora_config(cfg: TrainConfig) -> LoraConfig:
    from peft import LoraConfig

    named = cfg.lora_target_modules
    targets: str | list[str] = named
    if named != "all-linear":
        targets = [t.strip() for t in named.split(",") if t.strip()]
    return LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=targets,
        task_type="CAUSAL_LM",
    )


def _merge_lora(src: ModelSource, adapter_dir: Path, final_dir: Path, dtype: Any) -> None:
    """Fold the adapter into a fresh copy of the base model, so the output is a plain model folder."""
    from peft import PeftModel

    base = load_model(src, dtype=dtype)
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    merged.save_pretrained(final_dir)


@dataclass
class Prepared:
    """A trainer ready to run, and what `train` needs to finish the job after it."""

    cfg: TrainConfig
    trainer: Any
    tokenizer: Any
    source: ModelSource
    work: Path
    precision: str
    settings: ResolvedSettings
    losses: list[float]
    meter: TokenMeter
    step_marks: list[tuple[float, int]]  # (time, real tokens so far) at the end of every optimizer step
    plan: Plan | None  # None: padded batches


def _plan_epochs(n: int, global_batch: int, devices: int, epochs: float, max_steps: int) -> int:
    steps = n // global_batch + (1 if n % global_batch >= devices else 0)
    if max_steps > 0:
        return max(1, math.ceil(max_steps / max(1, steps)))
    return max(1, math.ceil(epochs))


def _batch_layout(
    cfg: TrainConfig, choice: RuntimeChoice, lengths: list[int], devices: int
) -> tuple[Plan | None, dict[str, Any]]:
    """The token-budget plan (or the padded split) and its description for the settings file."""
    if choice.batching == "padded":
        batch = resolve_batch(cfg.global_batch_size, cfg.per_device_batch_size, devices)
        micro = math.ceil(len(lengths) / (batch.per_device_batch_size * devices))
        stats = padded_stats(lengths, cfg.global_batch_size, batch.per_device_batch_size, cfg.seed)
        described = {
            **asdict(batch),
            "layout": "padded",
            "steps_per_epoch": math.ceil(micro / batch.gradient_accumulation_steps),
            "planned_padding_fraction": round(stats.padding_fraction, 4),
        }
        return None, described
    assert choice.max_tokens_per_batch is not None
    settings = PlanSettings(
        choice.batching,  # type: ignore[arg-type]
        cfg.global_batch_size,
        devices,
        cfg.max_length,
        choice.max_tokens_per_batch,
        cfg.seed,
    )
    epochs = _plan_epochs(len(lengths), cfg.global_batch_size, devices, cfg.epochs, cfg.max_steps)
    plan = plan_epochs(lengths, settings, epochs)
    stats = plan_stats([s for e in plan.epochs for s in e.steps], lengths)
    short = len(lengths) % cfg.global_batch_size
    described = {
        "world_size": devices,
        "layout": choice.batching,
        "max_tokens_per_batch": choice.max_tokens_per_batch,
        "gradient_accumulation_steps": plan.accumulation,
        "micro_batches_per_step": plan.accumulation * devices,
        "per_device_batch_size": None,  # examples per micro-batch vary with their lengths
        "effective_global_batch_size": cfg.global_batch_size,
        "steps_per_epoch": len(plan.epochs[0].steps),
        "planned_padding_fraction": round(stats.padding_fraction, 4),
        "note": None
        if plan.last_step_accumulation or not short
        else f"the last {short} examples of each epoch, fewer than the devices, are skipped",
    }
    return plan, described


def _trainer_class() -> Any:
    """SFTTrainer fed by the batch plan (when there is one) and counting the tokens it trains on."""
    from torch.utils.data import DataLoader
    from transformers import PreTrainedTokenizerBase
    from trl import SFTTrainer

    class TokenBudgetTrainer(SFTTrainer):
        row_plan: Plan | None = None
        meter: TokenMeter

        def get_train_dataloader(self) -> DataLoader[Any]:
            if self.row_plan is None:
                return super().get_train_dataloader()
            tokenizer = self.processing_class
            assert isinstance(tokenizer, PreTrainedTokenizerBase)  # `prepare` hands the trainer a tokenizer
            collator = RowCollator(tokenizer.pad_token_id, self.row_plan.settings.layout, self.meter)
            # A map-style dataset by duck typing, which is all DataLoader uses; torch's stub asks for its
            # own base class.
            rows = cast("Dataset[dict[str, Any]]", RowTaggedDataset(self.train_dataset))
            loader: DataLoader[dict[str, Any]] = DataLoader(
                rows,
                batch_sampler=PlanSampler(self.row_plan),
                collate_fn=collator,
                pin_memory=self.args.dataloader_pin_memory,
            )
            prepared: DataLoader[dict[str, Any]] = self.accelerator.prepare(loader)
            return prepared

        def training_step(self, *args: Any, **kwargs: Any) -> torch.Tensor:
            self.meter.consume()
            # trl's SFTTrainer.training_step has no annotations, and mypy's untyped_calls_exclude does
            # not reach a call through super().
            loss: torch.Tensor = super().training_step(*args, **kwargs)  # type: ignore[no-untyped-call]
            return loss

    return TokenBudgetTrainer


def _step_timer(meter: TokenMeter, marks: list[tuple[float, int]]) -> TrainerCallback:
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def on_step_end(
            self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
        ) -> None:
            import torch

            if torch.cuda.is_available():
                torch.cuda.synchronize()  # the step's kernels have finished, not just been queued
            marks.append((time.monotonic(), meter.real))

    return StepTimer()


def prepare(cfg: TrainConfig) -> Prepared:
    """Validate everything, tokenize the data, choose the per-device settings, plan the batches and
    build the trainer."""
    require(*TRAIN_MODULES)
    import torch
    from datasets import Dataset
    from trl import SFTConfig

    src = resolve_source(cfg.model, cfg.gguf_file)
    _require_deepspeed(cfg.deepspeed)
    deepspeed = cfg.deepspeed is not None or os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() in ("1", "true")
    out = Path(cfg.out)
    _check_out(out, cfg.overwrite)
    pairs = load_pairs(cfg)
    precision = resolve_precision(cfg.precision)
    devices = world_size()
    cuda = torch.cuda.is_available()
    tokenizer = load_tokenizer(src)
    tokenized = tokenize_pairs(pairs, tokenizer, cfg.max_length)
    if not tokenized.examples:
        raise UserError(
            f"{cfg.data}: no example keeps a response token within max_length {cfg.max_length}",
            settings=("max_length",),
        )
    lengths = tokenized.lengths

    # Under DeepSpeed ZeRO-3 the trainer's arguments must exist before the model loads (they switch on
    # the sharded initialisation that `from_pretrained` uses), so the choices are made from the config.
    model = None if deepspeed else load_model(src, dtype=torch.float32)
    model_config = model.config if model is not None else load_config(src)
    params = sum(p.numel() for p in model.parameters()) if model is not None else count_parameters(model_config)
    choice = runtime.choose(
        cfg,
        model_config,
        params=params,
        probe_model=model,
        cuda=cuda,
        precision=precision,
        world_size=devices,
        deepspeed=deepspeed,
    )
    plan, batch = _batch_layout(cfg, choice, lengths, devices)
    steps = total_steps(batch["steps_per_epoch"], cfg.epochs, cfg.max_steps)
    warmup = warmup_steps(cfg.warmup_ratio, steps)
    if plan is None:
        per_device, accumulation = batch["per_device_batch_size"], batch["gradient_accumulation_steps"]
    else:
        accumulation = plan.accumulation
        per_device = max(1, cfg.global_batch_size // (accumulation * devices))  # only for the trainer's log
    work = out.parent / f".{out.name}.partial"
    if _is_main_process():
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)

    quiet = not sys.stderr.isatty()  # no progress bar: plain lines instead
    args = SFTConfig(
        output_dir=str(work / "trainer"),
        learning_rate=cfg.learning_rate,
        per_device_train_batch_size=per_device,
        gradient_accumulation_steps=accumulation,
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        max_length=cfg.max_length,
        weight_decay=cfg.weight_decay,
        warmup_steps=warmup,  # whole steps, computed from the ratio (a float's meaning varies by version)
        lr_scheduler_type=cfg.lr_scheduler,
        optim=choice.optim,
        use_liger_kernel=choice.liger,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        **_checkpointing_arg(SFTConfig, choice.gradient_checkpointing),
        dataloader_pin_memory=cuda,
        use_cpu=not cuda,  # lets torchrun on CPU run real DDP (gloo)
        logging_steps=cfg.logging_steps,
        logging_nan_inf_filter=False,  # log a NaN loss as NaN, so `divergence_guard` sees it
        save_strategy="no",
        report_to="none",
        seed=cfg.seed,
        completion_only_loss=True,
        packing=False,
        dataset_kwargs={"skip_prepare_dataset": True},  # tokenized above, the way TRL does it
        deepspeed=_deepspeed_path(cfg.deepspeed),
        disable_tqdm=quiet,
    )
    if model is None:
        model = load_model(src, dtype=torch.float32)
    losses: list[float] = []
    meter = TokenMeter()
    marks: list[tuple[float, int]] = []
    trainer = _trainer_class()(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(tokenized.examples),
        processing_class=tokenizer,
        peft_config=_lora_config(cfg) if cfg.lora else None,
        callbacks=[
            _step_logger(work / LOG_FILE, losses, lines=quiet),
            _step_timer(meter, marks),
            divergence_guard(cfg.learning_rate),
        ],
    )
    if quiet:  # its log dicts on stdout would mix with the command's output; StepLog says it
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)
    trainer.row_plan, trainer.meter = plan, meter
    if plan is None:
        trainer.data_collator = CountingCollator(trainer.data_collator, meter)
    settings = ResolvedSettings.from_parts(cfg, batch, precision, str(trainer.args.device), len(lengths), _versions())
    settings.config["model_source"] = src.describe()
    settings.runtime = {**choice.to_dict(), "truncated_examples": tokenized.truncated}
    settings.runtime["dropped_examples"] = tokenized.dropped
    settings.schedule = {"optimizer_steps": steps, "warmup_steps": warmup}
    return Prepared(cfg, trainer, tokenizer, src, work, precision, settings, losses, meter, marks, plan)


def _checkpointing_arg(config_cls: Any, enabled: bool) -> dict[str, Any]:
    """transformers 5 renamed gradient checkpointing to activation checkpointing; set whichever exists
    (TRL's default for the old name is True, which we do not want on by default)."""
    fields = getattr(config_cls, "__dataclass_fields__", {})
    key = "activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing"
    return {key: enabled}


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0") or 0) == 0


def _adds_bos(tokenizer: Any) -> bool:
    bos = tokenizer.bos_token_id
    return bos is not None and tokenizer("x")["input_ids"][:1] == [bos]


def _is_main(trainer: Any) -> bool:
    return _is_main_process() and trainer.is_world_process_zero()


def _save(p: Prepared) -> None:
    """Save the final weights into the work folder (merged, when LoRA was trained)."""
    import torch

    trainer = p.trainer
    if p.cfg.lora and p.cfg.merge_lora:
        adapter_dir = p.work / "adapter"
        trainer.save_model(str(adapter_dir))
        trainer.accelerator.wait_for_everyone()
        if _is_main(trainer):
            dtype = torch.bfloat16 if p.precision == "bf16" else torch.float32
            _merge_lora(p.source, adapter_dir, p.work, dtype)
            shutil.rmtree(adapter_dir)
        return
    if p.precision == "bf16" and not trainer.is_deepspeed_enabled:
        trainer.model.to(torch.bfloat16)  # the weights were fp32 masters; save what inference uses
    trainer.save_model(str(p.work))


def _throughput(p: Prepared, seconds: float) -> dict[str, Any]:
    """Real (not padding) tokens trained on, all devices together, per second: over the whole run, and
    from the end of step 2 on (leaving out start-up and the first steps' warm-up of kernels)."""
    import torch

    acc = p.trainer.accelerator
    counts = torch.tensor([p.meter.real, p.meter.computed], dtype=torch.float64, device=acc.device)
    real, computed = (int(x) for x in acc.reduce(counts, reduction="sum").tolist())
    out: dict[str, Any] = {
        "real_tokens": real,
        "computed_tokens": computed,
        "padding_fraction": round(1 - real / computed, 4) if computed else None,
        "tokens_per_second": round(real / seconds, 1) if seconds > 0 else None,
        "tokens_per_second_after_step_2": None,
    }
    marks = p.step_marks
    if len(marks) > 2 and marks[-1][0] > marks[1][0]:
        local = (marks[-1][1] - marks[1][1]) / (marks[-1][0] - marks[1][0])
        out["tokens_per_second_after_step_2"] = round(local * real / max(1, p.meter.real), 1)
    return out


def train(cfg: TrainConfig) -> TrainResult:
    """Fine-tune `cfg.model` on `cfg.data` and save the result to `cfg.out` (see module doc)."""
    p = prepare(cfg)
    trainer, out = p.trainer, Path(cfg.out)
    if _is_main(trainer):
        atomic_write_text(p.work / SETTINGS_FILE, json.dumps(p.settings.to_dict(), indent=2) + "\n")
    start = time.monotonic()
    try:
        output = trainer.train()
    except TrainingDiverged:
        if _is_main_process():
            shutil.rmtree(p.work, ignore_errors=True)  # nothing of a diverged run may look usable
        raise
    seconds = time.monotonic() - start
    _save(p)
    trainer.accelerator.wait_for_everyone()
    p.settings.result = {
        "train_loss": output.training_loss,
        "global_steps": output.global_step,
        "seconds": round(seconds, 2),
        "first_loss": p.losses[0] if p.losses else None,
        "last_loss": p.losses[-1] if p.losses else None,
        **_throughput(p, seconds),
    }
    if _is_main(trainer):
        p.tokenizer.padding_side = "left"  # what batched generation wants
        p.tokenizer.chat_template = alpaca_chat_template(bos_token=_adds_bos(p.tokenizer))
        p.tokenizer.save_pretrained(p.work)
        atomic_write_text(p.work / SETTINGS_FILE, json.dumps(p.settings.to_dict(), indent=2) + "\n")
        shutil.rmtree(p.work / "trainer", ignore_errors=True)
        (p.work / "training_args.bin").unlink(missing_ok=True)  # a pickle; the JSON settings replace it
        if out.exists():
            shutil.rmtree(out)
        os.replace(p.work, out)
    trainer.accelerator.wait_for_everyone()
    return TrainResult(out, p.settings.to_dict(), p.losses, seconds, _is_main(trainer))
