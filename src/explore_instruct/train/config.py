"""Training settings, kept apart from the trainer so they can be resolved, saved and tested alone.

Defaults are the paper's: lr 2e-5, global batch 128, 3 epochs, max length 512, AdamW, no weight
decay, 3 % warm-up, cosine schedule, bf16 where the hardware has it. `auto` values are resolved per
device by `runtime.choose`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from explore_instruct.settings import SettingProblem, Settings

Precision = Literal["auto", "bf16", "fp16", "fp32"]
Batching = Literal["auto", "packed", "grouped", "padded"]
BATCHING: tuple[str, ...] = ("auto", "packed", "grouped", "padded")


class TrainSettings(Settings):
    """Every setting of a training run: `train`'s options and an experiment spec's `train:` section."""

    gguf_file: str | None = Field(None, description="GGUF file name inside the model folder.")
    learning_rate: float = Field(2e-5, gt=0, description="Peak learning rate.")
    global_batch_size: int = Field(128, ge=1, description="Per-device batch x accumulation x devices.")
    per_device_batch_size: int = Field(
        4, ge=1, description="Rows per micro-batch with padded batching; on CPU also sets the token budget."
    )
    epochs: float = Field(3.0, ge=0, le=1000, description="Passes over the data.")
    max_steps: int = Field(-1, ge=-1, description="Stop after this many optimizer steps (> 0 overrides epochs).")
    max_length: int = Field(512, ge=8, description="Tokens per sequence (longer ones are cut).")
    weight_decay: float = Field(0.0, ge=0, le=1, description="AdamW weight decay.")
    warmup_ratio: float = Field(0.03, ge=0, lt=1, description="Share of steps for linear warm-up.")
    lr_scheduler: str = Field("cosine", description="Learning-rate schedule (transformers name).")
    optim: str = Field(
        "auto", description="Optimizer (transformers name); auto: adamw_torch_fused on CUDA, else adamw_torch."
    )
    precision: Precision = Field("auto", description="auto (bf16 where supported, else fp32), bf16, fp16, fp32.")
    gradient_checkpointing: bool | None = Field(
        None, description="Trade compute for activation memory (default: only when memory requires it)."
    )
    batching: Batching = Field(
        "auto", description="auto (packed where attention keeps examples apart, else grouped), packed, grouped, padded."
    )
    max_tokens_per_batch: int | None = Field(
        None, ge=1, description="Token budget of a micro-batch (rows x longest row); default from the device."
    )
    liger: bool | None = Field(None, description="Liger kernels (default: on CUDA when installed).")
    seed: int = Field(42, description="Random seed.")
    max_examples: int | None = Field(None, ge=1, description="Train on the first N records only.")
    lora: bool = Field(False, description="Train LoRA adapters (PEFT) instead of all weights.")
    lora_r: int = Field(16, ge=1, description="LoRA rank.")
    lora_alpha: int = Field(32, ge=1, description="LoRA alpha.")
    lora_dropout: float = Field(0.05, ge=0, lt=1, description="LoRA dropout.")
    lora_target_modules: str = Field("all-linear", description="'all-linear' or comma-separated module names.")
    merge_lora: bool = Field(True, description="Save a merged full model (else the adapter only).")
    deepspeed: str | None = Field(None, description="DeepSpeed JSON, or 'zero3' for the shipped one.")

    @model_validator(mode="after")
    def _across_settings(self) -> TrainSettings:
        if self.epochs <= 0 and self.max_steps <= 0:
            raise SettingProblem("must be positive (or max_steps above 0)", setting="epochs", mentions=("max_steps",))
        if self.max_tokens_per_batch is not None and self.max_tokens_per_batch < self.max_length:
            raise SettingProblem(
                f"must be at least max_length (one full row), not {self.max_tokens_per_batch} < {self.max_length}",
                setting="max_tokens_per_batch",
                mentions=("max_length",),
            )
        return self


class TrainConfig(TrainSettings):
    """One training run: its settings plus the data, the base model and the output folder."""

    not_settings: ClassVar[frozenset[str]] = frozenset({"data", "model", "out", "logging_steps", "overwrite"})

    data: Path
    model: str
    out: Path
    logging_steps: int = 1
    overwrite: bool = False

    def settings(self) -> TrainSettings:
        return TrainSettings(**{k: getattr(self, k) for k in TrainSettings.setting_names()})


@dataclass
class ResolvedBatch:
    world_size: int
    per_device_batch_size: int
    gradient_accumulation_steps: int
    effective_global_batch_size: int
    note: str | None = None


def resolve_batch(global_batch: int, per_device: int, world_size: int) -> ResolvedBatch:
    """Split the global batch into per-device batch x accumulation x devices.

    The per-device batch shrinks when the global batch is smaller than one step on all devices; an
    indivisible global batch rounds the accumulation up and says so (the effective batch is saved).
    """
    world_size = max(1, world_size)
    per_device = max(1, min(per_device, math.ceil(global_batch / world_size)))
    accumulation = max(1, math.ceil(global_batch / (per_device * world_size)))
    effective = per_device * accumulation * world_size
    note = None
    if effective != global_batch:
        note = (
            f"global batch {global_batch} is not a multiple of {per_device} x {world_size} devices; using {effective}"
        )
    return ResolvedBatch(world_size, per_device, accumulation, effective, note)


def warmup_steps(ratio: float, total_steps: int) -> int:
    """Whole warm-up steps for a ratio of the optimizer steps (rounded up, as transformers does), so the
    meaning does not depend on how a transformers version reads a float `warmup_steps`."""
    return math.ceil(ratio * total_steps) if ratio > 0 else 0


def total_steps(steps_per_epoch: int, epochs: float, max_steps: int) -> int:
    """Optimizer steps of the run, counted as the trainer counts them."""
    return max_steps if max_steps > 0 else max(1, math.ceil(epochs * steps_per_epoch))


@dataclass
class ResolvedSettings:
    """Everything the run actually used, written to `train_settings.json` beside the model."""

    config: dict[str, Any]
    batch: dict[str, Any]
    precision: str
    device: str
    num_examples: int
    versions: dict[str, str] = field(default_factory=dict)
    result: dict[str, Any] = field(default_factory=dict)
    runtime: dict[str, Any] = field(default_factory=dict)  # every per-device choice and why
    schedule: dict[str, Any] = field(default_factory=dict)  # optimizer steps and whole warm-up steps

    @staticmethod
    def from_parts(
        cfg: TrainConfig, batch: dict[str, Any], precision: str, device: str, n: int, versions: dict[str, str]
    ) -> ResolvedSettings:
        config = {k: (str(v.resolve()) if isinstance(v, Path) else v) for k, v in dict(cfg).items()}
        return ResolvedSettings(config, batch, precision, device, n, versions)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
