"""The embeddings protocol, beside the completion one: a backend turns texts into unit vectors.

Backends: `OpenAICompatEmbedder` (`openai_compat.py`, any `/v1/embeddings` server), `LocalEmbedder`
(`local.py`, the bundled GGUF in-process) and `HashEmbedder` here (tests and dry runs). Caching,
batching, retries, the call log and the budget live in `embed_client.py`, as for completions.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from explore_instruct.config import EmbeddingsConfig, check_base_url
from explore_instruct.errors import UserError


@dataclass
class EmbedResult:
    """One vector per text, in order (float32, rows of length 1), and the tokens the request used."""

    vectors: np.ndarray
    tokens: int


@runtime_checkable
class Embedder(Protocol):
    """An embedding backend. `model_id` names the model in the vector cache key and the call log."""

    model_id: str

    async def embed(self, texts: list[str]) -> EmbedResult: ...

    async def aclose(self) -> None: ...


def normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1 (a zero row stays zero), as float32: cosine similarity is then a dot product."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1.0).astype(np.float32)


class HashEmbedder:
    """Deterministic vectors from the words of a text, no model: texts sharing words point alike.

    Each word adds a fixed pseudo-random direction (seeded by its hash), so reordered or near-copied
    instructions get a high cosine similarity and unrelated ones a low one. `requests` keeps every
    batch received, so tests can count calls; an exception in `faults` is raised (once) instead.
    """

    def __init__(self, dims: int = 64, *, model_id: str = "hash-embed", faults: list[BaseException] | None = None):
        self.dims = dims
        self.model_id = model_id
        self.requests: list[list[str]] = []
        self.faults = list(faults or [])

    def vector(self, text: str) -> np.ndarray:
        out = np.zeros(self.dims, dtype=np.float64)
        for word in text.lower().split():
            seed = int.from_bytes(hashlib.sha256(word.encode()).digest()[:8], "big")
            out += np.random.default_rng(seed).standard_normal(self.dims)
        return out

    async def embed(self, texts: list[str]) -> EmbedResult:
        self.requests.append(list(texts))
        await asyncio.sleep(0)
        if self.faults:
            raise self.faults.pop(0)
        vectors = normalise(np.stack([self.vector(t) for t in texts]))
        return EmbedResult(vectors, sum(len(t.split()) for t in texts))

    async def aclose(self) -> None:
        return None


def build_embedder(
    backend: str, *, base_url: str | None = None, model: str | None = None, api_key_env: str | None = None,
    model_path: str | None = None, timeout: float = 120.0,
) -> Embedder:  # fmt: skip
    """`openai`: a `/v1/embeddings` endpoint (needs base_url and model); `local`: a GGUF in-process."""
    if backend == "openai":
        if not base_url or not model:
            raise UserError("embeddings backend 'openai' needs a base URL and a model (embeddings.base_url, .model)")
        try:
            base_url = check_base_url(base_url)
        except ValueError as exc:  # the URL itself is not repeated: it may hold a secret
            raise UserError(f"embeddings base URL {exc}") from None
        from explore_instruct.llm.openai_compat import OpenAICompatEmbedder

        return OpenAICompatEmbedder(base_url=base_url, model=model, api_key_env=api_key_env, timeout=timeout)
    if backend == "local":
        from explore_instruct.llm.local import LocalEmbedder

        return LocalEmbedder(model_path=model_path or model)
    raise UserError(f"embeddings backend must be one of openai, local (got {backend!r})")


def embedder_from_config(cfg: EmbeddingsConfig, *, timeout: float = 120.0) -> Embedder:
    return build_embedder(
        cfg.backend,
        base_url=cfg.base_url,
        model=cfg.model,
        api_key_env=cfg.api_key_env,
        model_path=cfg.model_path,
        timeout=timeout,
    )
