"""Training settings, kept apart from the trainer so they can be resolved, saved and tested alone.

Defaults are the paper's: lr 2e-5, global batch 128, 3 epochs, max length 512, AdamW, no weight
decay, 3 % warm-up, cosine schedule, bf16 where the hardware has it. `auto` values are resolved per
device by `runtime.choose`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from explore_instruct.errors import UserError

Precision = Literal["auto", "bf16", "fp16", "fp32"]
BATCHING = ("auto", "packed", "grouped", "padded")


@dataclass
class TrainConfig:
    data: Path
    model: str
    out: Path
    gguf_file: str | None = None
    learning_rate: float = 2e-5
    global_batch_size: int = 128
    per_device_batch_size: int = 4
    epochs: float = 3.0
    max_steps: int = -1  # > 0 overrides epochs (smoke runs)
    max_length: int = 512
    weight_decay: float = 0.0
    warmup_ratio: float = 0.03
    lr_scheduler: str = "cosine"
    optim: str = "auto"  # adamw_torch_fused on CUDA, adamw_torch elsewhere
    precision: Precision = "auto"
    gradient_checkpointing: bool | None = None  # None: only when memory requires it
    batching: str = "auto"  # packed rows where attention keeps them apart, else grouped; or padded
    max_tokens_per_batch: int | None = None  # per micro-batch; None: from the device (see runtime.py)
    liger: bool | None = None  # None: Liger kernels on CUDA when installed
    seed: int = 42
    logging_steps: int = 1
    max_examples: int | None = None  # train on the first N records only (smoke runs)
    lora: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target_modules: str = "all-linear"
    merge_lora: bool = True  # save a merged full model (loadable by transformers and vLLM alike)
    deepspeed: str | None = None  # a DeepSpeed JSON path, or "zero3" for the shipped config
    overwrite: bool = False

    def validate(self) -> None:
        checks = [
            (self.learning_rate > 0, "--lr must be positive"),
            (self.global_batch_size >= 1, "--global-batch-size must be at least 1"),
            (self.per_device_batch_size >= 1, "--per-device-batch-size must be at least 1"),
            (self.epochs > 0 or self.max_steps > 0, "--epochs must be positive"),
            (self.max_length >= 8, "--max-length must be at least 8"),
            (0 <= self.warmup_ratio < 1, "--warmup-ratio must lie in [0, 1)"),
            (self.weight_decay >= 0, "--weight-decay must not be negative"),
            (self.max_examples is None or self.max_examples >= 1, "--max-examples must be at least 1"),
            (self.lora_r >= 1, "--lora-r must be at least 1"),
            (self.batching in BATCHING, f"--batching must be one of {', '.join(BATCHING)}"),
            (
                self.max_tokens_per_batch is None or self.max_tokens_per_batch >= self.max_length,
                "--max-tokens-per-batch must be at least --max-length (one full row)",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(message)


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
        config = {k: (str(v.resolve()) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()}
        return ResolvedSettings(config, batch, precision, device, n, versions)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
