"""A tiny randomly initialised Llama with a byte-level BPE tokenizer trained on the spot.

Built entirely from a config, so tests, CPU smoke runs and GPU checks exercise the real training
and answering code without downloading weights.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from explore_instruct.train.prompting import PROMPT_NO_INPUT, PROMPT_WITH_INPUT

if TYPE_CHECKING:  # torch and transformers are imported only when a model is built
    import torch
    from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>"]


def build_tokenizer(corpus: Iterable[str], vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer (any text round-trips) trained on `corpus` plus the prompt template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator([PROMPT_WITH_INPUT, PROMPT_NO_INPUT, *corpus], trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
    )


def build_tiny_llama(
    out_dir: str | Path,
    corpus: Iterable[str],
    *,
    hidden_size: int = 64,
    layers: int = 2,
    heads: int = 4,
    vocab_size: int = 512,
    seed: int = 0,
) -> Path:
    """Save a tiny random LlamaForCausalLM and its tokenizer to `out_dir`; returns the folder."""
    tokenizer = build_tokenizer(corpus, vocab_size)
    return build_random_llama(
        out_dir,
        tokenizer,
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        layers=layers,
        heads=heads,
        kv_heads=max(1, heads // 2),
        seed=seed,
    )


# A 1.1B Llama shape (TinyLlama's): what the GPU measurements of training use, with random weights.
LLAMA_1B = {"hidden_size": 2048, "intermediate_size": 5632, "layers": 22, "heads": 32, "kv_heads": 4}


def build_random_llama(
    out_dir: str | Path,
    tokenizer: PreTrainedTokenizerBase,  # with bos, eos and pad tokens
    *,
    hidden_size: int,
    intermediate_size: int,
    layers: int,
    heads: int,
    kv_heads: int,
    seed: int = 0,
    dtype: torch.dtype | None = None,  # of the saved weights (default fp32)
) -> Path:
    """Save a randomly initialised LlamaForCausalLM of the given shape with `tokenizer` to `out_dir`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out = Path(out_dir)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    if dtype is not None:
        # transformers wraps Module.to with functools.wraps, whose stub keeps the unbound signature
        # (the dtype is taken for `self`).
        model = model.to(dtype)  # type: ignore[arg-type]
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
