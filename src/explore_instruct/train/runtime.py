"""Per-device choices for a training run: the batch layout, the token budget of a micro-batch,
gradient checkpointing, the optimizer implementation and Liger kernels. Each choice comes with the
reason it was made, and all of them go into `train_settings.json`.

On CPU the defaults keep the old memory ceiling (`--per-device-batch-size` rows of `--max-length`
tokens per micro-batch) and plain PyTorch. On CUDA the budget is what the free memory holds once the
model, its gradients and AdamW's state are counted, with an estimate of activation memory per token;
gradient checkpointing is switched on only when not even one full row would fit without it.
"""

from __future__ import annotations

import importlib.util
from dataclasses import asdict, dataclass
from typing import Any

from explore_instruct.errors import UserError

GIB = 1 << 30
MAX_AUTO_BUDGET = 1 << 17  # tokens; beyond this a micro-batch gains nothing on today's GPUs


@dataclass
class RuntimeChoice:
    batching: str  # packed, grouped or padded
    batching_reason: str
    max_tokens_per_batch: int | None  # None: padded batches of --per-device-batch-size rows
    budget_reason: str
    gradient_checkpointing: bool
    checkpointing_reason: str
    optim: str
    liger: bool
    attention: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def liger_installed() -> bool:
    return importlib.util.find_spec("liger_kernel") is not None


def activation_bytes_per_token(config: Any, *, checkpointing: bool, half: bool) -> int:
    """Memory kept for the backward pass per token, for a Llama-shaped decoder (bf16/fp16 autocast when
    `half`). Counted from what each layer saves: normalisation inputs and residuals in fp32, projections
    and attention in half precision, four intermediate-size tensors in the MLP. The LM head is TRL's
    chunked fused head, so the vocabulary-size logits are never held for all tokens at once."""
    hidden = int(getattr(config, "hidden_size", 0) or 0)
    inter = int(getattr(config, "intermediate_size", 0) or 4 * hidden)
    layers = int(getattr(config, "num_hidden_layers", 0) or 0)
    scale = 1 if half else 2
    per_layer = scale * (36 * hidden + 10 * inter)
    if checkpointing:  # only each layer's input is kept, one layer is recomputed at a time
        return 4 * hidden * layers + per_layer + 8 * hidden
    return per_layer * layers + 8 * hidden


def model_state_bytes(params: int, trainable: int, shards: int) -> int:
    """fp32 weights, their bf16 autocast copies, fp32 gradients and AdamW's two moments."""
    return (params * (4 + 2) + trainable * (4 + 8)) // max(1, shards)


def auto_token_budget(
    config: Any, params: int, trainable: int, max_length: int, *, free: int, total: int, shards: int, half: bool
) -> tuple[int, bool, str]:
    """(token budget, gradient checkpointing, reason) from the free GPU memory."""
    reserve = total // 10 + GIB  # CUDA context, allocator fragmentation, temporary buffers
    room = free - model_state_bytes(params, trainable, shards) - reserve
    for checkpointing in (False, True):
        per_token = activation_bytes_per_token(config, checkpointing=checkpointing, half=half)
        tokens = min(MAX_AUTO_BUDGET, max(0, room) // max(1, per_token))
        if tokens >= max_length:
            reason = (
                f"{free / GIB:.1f} GiB free, {room / GIB:.1f} GiB left after model, gradients and optimizer; "
                f"about {per_token / 1024:.0f} KiB of activations per token"
                + ("; only with gradient checkpointing does a full row fit" if checkpointing else "")
            )
            return int(tokens), checkpointing, reason
    return max_length, True, f"{free / GIB:.1f} GiB free is too little by the estimate; one row per micro-batch"


def packing_respects_boundaries(model: Any) -> bool:
    """Run two short sequences separately and packed in one row (position ids restarting at the second):
    the packed logits must match the separate ones, while plain concatenation must not."""
    import torch

    vocab = int(model.config.vocab_size)
    a = torch.arange(3, 10) % vocab
    b = torch.arange(40, 46) % vocab
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            alone = torch.cat([model(input_ids=s[None], use_cache=False).logits[0] for s in (a, b)])
            row = torch.cat([a, b])[None]
            positions = torch.cat([torch.arange(len(a)), torch.arange(len(b))])[None]
            packed = model(input_ids=row, position_ids=positions, use_cache=False).logits[0]
            leaked = model(input_ids=row, use_cache=False).logits[0]
    finally:
        model.train(was_training)
    error = float((packed - alone).abs().max())
    leak = float((leaked - alone).abs().max())
    return error <= max(1e-5, 1e-3 * leak) and leak > 0


def choose(
    cfg: Any,
    model_config: Any,
    *,
    params: int,
    probe_model: Any,
    cuda: bool,
    precision: str,
    world_size: int,
    deepspeed: bool,
) -> RuntimeChoice:
    """Resolve every `auto` of the config for this device (see module doc). `probe_model`: the loaded
    model to check packed attention on, or None when the weights load later (DeepSpeed ZeRO-3)."""
    attention = str(getattr(model_config, "_attn_implementation", None) or "sdpa")
    batching, batching_reason = _batching(cfg.batching, probe_model)
    checkpointing = cfg.gradient_checkpointing
    checkpointing_reason = "given" if checkpointing is not None else ""
    if batching == "padded":
        budget, budget_reason = None, f"padded batches of {cfg.per_device_batch_size} rows"
    elif cfg.max_tokens_per_batch is not None:
        budget, budget_reason = cfg.max_tokens_per_batch, "given"
    elif cuda:
        import torch

        free, total = torch.cuda.mem_get_info()
        trainable = params // 50 if cfg.lora else params  # LoRA adapters: about 1-2 % of the weights
        budget, needs_checkpointing, budget_reason = auto_token_budget(
            model_config,
            params,
            trainable,
            cfg.max_length,
            free=free,
            total=total,
            shards=world_size if deepspeed else 1,
            half=precision in ("bf16", "fp16"),
        )
        if checkpointing is None:
            checkpointing, checkpointing_reason = needs_checkpointing, "memory estimate"
    else:
        budget = cfg.per_device_batch_size * cfg.max_length
        budget_reason = "CPU: --per-device-batch-size x --max-length (the padded trainer's memory ceiling)"
    if checkpointing is None:
        checkpointing, checkpointing_reason = False, "not needed"
    if budget is not None and budget < cfg.max_length:
        raise UserError(
            f"max_tokens_per_batch {budget} must be at least max_length {cfg.max_length}",
            settings=("max_tokens_per_batch", "max_length"),
        )
    optim = cfg.optim
    if optim == "auto":
        optim = "adamw_torch_fused" if cuda else "adamw_torch"
    liger = cfg.liger if cfg.liger is not None else (cuda and liger_installed())
    if liger and not liger_installed():
        raise UserError(
            "liger: liger-kernel is not installed: pip install 'explore-instruct[gpu]'", settings=("liger",)
        )
    return RuntimeChoice(
        batching, batching_reason, budget, budget_reason, checkpointing, checkpointing_reason, optim, liger, attention
    )


def _batching(requested: str, probe_model: Any) -> tuple[str, str]:
    if requested != "auto":
        return requested, "given"
    if probe_model is None:
        # The weights are not loaded yet (DeepSpeed shards them at load time): rely on the library.
        try:
            from transformers.masking_utils import find_packed_sequence_indices  # noqa: F401
        except ImportError:
            return "grouped", "this transformers cannot keep packed sequences apart"
        return "packed", "transformers keeps packed sequences apart (masking_utils)"
    if packing_respects_boundaries(probe_model):
        return "packed", "probe: packed logits equal separate ones"
    return "grouped", "probe: attention crossed packed-sequence boundaries"
