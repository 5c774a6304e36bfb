"""The one caller of an embedding backend: vector cache, batches, concurrency, retries, call log, budget.

Every vector is kept in the `embeddings` table (key: sha256 of model + NUL + text; a float32 blob),
so a rerun or a resume sends nothing for a text embedded before. Missing texts go out in batches of
`batch_size`, `max_concurrency` at once. Batches are cut from the whole ordered list of distinct
texts, not from the missing ones, so a resumed process sends exactly the batches the killed one had
not finished (a server's numbers can depend on what shares a batch). Each batch is committed with
its call-log row (stage "embed") in one transaction. Transport faults are retried with the
completion client's `RetryPolicy`; when retries run out the stage stops with the finished batches
kept. Embedding tokens count against `llm.budget`, priced at `llm.pricing.input_per_mtok`.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from explore_instruct.cost import Budget, estimate_tokens
from explore_instruct.errors import RunStopped
from explore_instruct.llm.base import Completion, TransientLLMError, Usage
from explore_instruct.llm.client import ClientStats, RetryPolicy
from explore_instruct.llm.embeddings import Embedder
from explore_instruct.runstore import CallLog, VectorCache, transaction

STAGE = "embed"


def vector_key(model_id: str, text: str) -> str:
    return hashlib.sha256(f"{model_id}\0{text}".encode()).hexdigest()


@dataclass(frozen=True)
class EmbedRequest:
    """What the call log keeps of one embedding batch: the model and the texts."""

    model: str
    texts: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"embeddings": self.model, "input": list(self.texts)}

    def key(self) -> str:
        return hashlib.sha256("\0".join(("embed", self.model, *self.texts)).encode()).hexdigest()


class EmbeddingFailed(RunStopped):
    """An embedding batch failed after its retries: the vectors finished so far are kept."""


class EmbeddingClient:
    def __init__(
        self,
        embedder: Embedder,
        cache: VectorCache,
        log: CallLog | None = None,
        *,
        batch_size: int = 64,
        max_concurrency: int = 4,
        retry: RetryPolicy | None = None,
        budget: Budget | None = None,
        stats: ClientStats | None = None,
    ) -> None:
        self.embedder = embedder
        self.cache = cache
        self.log = log
        self.batch_size = batch_size
        self.retry = retry or RetryPolicy()
        self.budget = budget
        self.stats = stats if stats is not None else ClientStats()
        self._slots = asyncio.Semaphore(max_concurrency)

    async def embed(self, texts: Sequence[str], *, progress: Callable[[int], None] | None = None) -> np.ndarray:
        """Unit vectors of `texts`, one row each, in order: from the cache, or sent in batches."""
        model = self.embedder.model_id
        distinct = list(dict.fromkeys(texts))
        keys = [vector_key(model, t) for t in distinct]
        have = self.cache.lookup(keys)
        stats = self.stats.stage(STAGE)
        stats.cache_hits += len(have)  # texts, not requests: a vector found is a text not sent
        if progress is not None and have:
            progress(len(have))
        batches = []
        for start in range(0, len(distinct), self.batch_size):
            missing = [i for i in range(start, min(start + self.batch_size, len(distinct))) if keys[i] not in have]
            if missing:
                batches.append(missing)
        results = await asyncio.gather(*(self._send([distinct[i] for i in b], progress) for b in batches))
        for batch, vectors in zip(batches, results, strict=True):
            for i, v in zip(batch, vectors, strict=True):
                have[keys[i]] = v
        if not distinct:
            return np.zeros((0, 0), dtype=np.float32)
        index = dict(zip(distinct, keys, strict=True))
        return np.stack([have[index[t]] for t in texts]).astype(np.float32, copy=False)

    async def _send(self, texts: list[str], progress: Callable[[int], None] | None) -> np.ndarray:
        stats = self.stats.stage(STAGE)
        request = EmbedRequest(self.embedder.model_id, tuple(texts))
        reasons: Counter[str] = Counter()
        start = time.monotonic()
        async with self._slots:
            for attempt in range(self.retry.retries + 1):
                if attempt:
                    stats.retries += 1
                reservation = None
                if self.budget is not None:
                    reservation = self.budget.reserve_usage(Usage(sum(estimate_tokens(t) for t in texts), 0))
                used = Usage()
                try:
                    result = await self.embedder.embed(texts)
                    used = Usage(result.tokens, 0)
                except TransientLLMError as exc:
                    reasons[str(exc.reason)] += 1
                    stats.retry_reasons[str(exc.reason)] += 1
                    fault: TransientLLMError | None = exc
                else:
                    fault = None
                finally:
                    if reservation is not None and self.budget is not None:
                        self.budget.settle(reservation, used)
                if fault is None:
                    break
                if attempt < self.retry.retries:
                    await asyncio.sleep(self.retry.delay(attempt, fault.retry_after))
            else:
                stats.failed += 1
                self._log(request, None, attempts=self.retry.retries + 1, reasons=reasons, start=start, error=fault)
                raise EmbeddingFailed(
                    f"an embedding request failed after {self.retry.retries + 1} attempts ({fault}); "
                    "vectors finished so far are saved: rerun with resume",
                    settings=("resume",),
                )
        vectors = result.vectors
        if vectors.shape[0] != len(texts):
            raise EmbeddingFailed(
                f"{self.embedder.model_id} returned {vectors.shape[0]} vectors for {len(texts)} texts"
            )
        stats.calls += 1
        stats.usage += Usage(result.tokens, 0)
        tokens = [estimate_tokens(t) for t in texts]  # per text: the reply counts the batch as a whole
        with transaction(self.cache.conn):
            self.cache.store(self.embedder.model_id, [vector_key(request.model, t) for t in texts], vectors, tokens)
            self._log(request, Usage(result.tokens, 0), attempts=attempt + 1, reasons=reasons, start=start)
        if progress is not None:
            progress(len(texts))
        return vectors

    def _log(
        self,
        request: EmbedRequest,
        usage: Usage | None,
        *,
        attempts: int,
        reasons: Counter[str],
        start: float,
        error: Exception | None = None,
    ) -> None:
        if self.log is None:
            return
        self.log.record(
            key=request.key(),
            stage=STAGE,
            model=request.model,
            request=request,
            completion=Completion("", usage, "stop") if usage is not None else None,
            attempts=attempts,
            error=None if error is None else f"{type(error).__name__}: {error}",
            seconds=time.monotonic() - start,
            retry_reasons=reasons,
            error_kind="transport" if error is not None else None,
        )

    async def aclose(self) -> None:
        await self.embedder.aclose()


class BlockingEmbeddings:
    """`EmbeddingClient.embed` for code that is not async (analysis): one event loop for every call,
    so an HTTP client's connections outlive a call. Call `close()` when done."""

    def __init__(self, client: EmbeddingClient) -> None:
        self.client = client
        self._loop = asyncio.new_event_loop()

    def __call__(self, texts: Sequence[str], progress: Callable[[int], None] | None = None) -> tuple[np.ndarray, str]:
        return self._loop.run_until_complete(self.client.embed(texts, progress=progress)), self.client.embedder.model_id

    def close(self) -> None:
        try:
            self._loop.run_until_complete(self.client.aclose())
        finally:
            self._loop.close()
