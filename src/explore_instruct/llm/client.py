"""The client every stage calls: cache, bounded concurrency, retries, call log, usage.

A call goes: cache lookup -> (miss) backend.complete with retries -> parse -> one transaction that
logs the call and writes whatever the caller derived from the reply. A killed process therefore
loses only the calls in flight, and a resumed one finds every finished reply in the cache.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from explore_instruct.db import transaction
from explore_instruct.llm.base import (
    LLM,
    Completion,
    CompletionRequest,
    ParseError,
    TransientLLMError,
    Usage,
)
from explore_instruct.llm.cache import CallLog

T = TypeVar("T")


@dataclass
class StageStats:
    calls: int = 0
    cache_hits: int = 0
    failed: int = 0
    retries: int = 0
    usage: Usage = field(default_factory=Usage)


@dataclass
class ClientStats:
    """What this process did, per stage (the call log holds the totals across resumes)."""

    stages: dict[str, StageStats] = field(default_factory=dict)

    def stage(self, name: str) -> StageStats:
        return self.stages.setdefault(name, StageStats())


@dataclass
class CallResult(Generic[T]):
    value: T | None
    completion: Completion | None
    call_id: int | None
    cached: bool
    error: str | None = None

    @property
    def failed(self) -> bool:
        return self.error is not None


@dataclass
class RetryPolicy:
    retries: int = 4
    base_delay: float = 1.0
    max_delay: float = 60.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_delay)
        # Exponential backoff with full jitter.
        return random.uniform(0, min(self.max_delay, self.base_delay * 2**attempt))


class LLMClient:
    def __init__(
        self,
        backend: LLM,
        log: CallLog,
        *,
        max_concurrency: int = 8,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.backend = backend
        self.log = log
        self.retry = retry or RetryPolicy()
        self.stats = ClientStats()
        self._slots = asyncio.Semaphore(max(1, max_concurrency))

    @property
    def conn(self) -> sqlite3.Connection:
        return self.log.conn

    async def call(
        self,
        request: CompletionRequest,
        *,
        stage: str,
        parse: Callable[[Completion], T],
        commit: Callable[[T, int], None] | None = None,
    ) -> CallResult[T]:
        """Complete `request`, parse the reply, and commit call + `commit(value, call_id)` atomically.

        `parse` raises ParseError for a malformed or truncated reply, which is retried like a server
        error. When retries run out the call is logged as failed and `CallResult.error` says why;
        only FatalLLMError (unreachable endpoint, refused credentials) propagates.
        """
        stats = self.stats.stage(stage)
        key = request.key(self.backend.model_id)
        cached = self.log.lookup(key)
        if cached is not None:
            stats.cache_hits += 1
            value = parse(cached.completion)  # replies are cached only after they parsed
            if commit is not None:
                with transaction(self.conn):
                    commit(value, cached.id)
            return CallResult(value, cached.completion, cached.id, cached=True)

        async with self._slots:
            start = time.monotonic()
            error: str | None = "no attempt made"
            usage = Usage()
            completion: Completion | None = None
            value: T | None = None
            attempts = 0
            for attempt in range(self.retry.retries + 1):
                attempts = attempt + 1
                if attempt:
                    stats.retries += 1
                # A different seed per attempt, so a seeded backend does not repeat a bad reply.
                sent = (
                    request
                    if attempt == 0 or request.seed is None
                    else dataclasses.replace(request, seed=request.seed + 7919 * attempt)
                )
                try:
                    completion = await self.backend.complete(sent)
                    usage += completion.usage
                    if completion.finish_reason == "length":
                        raise ParseError("reply truncated at max_tokens")
                    value = parse(completion)
                    error = None
                    break
                except (TransientLLMError, ParseError) as exc:
                    completion = None
                    error = f"{type(exc).__name__}: {exc}"
                    if attempt < self.retry.retries:
                        await asyncio.sleep(self.retry.delay(attempt, getattr(exc, "retry_after", None)))

            stats.usage += usage
            if completion is None:
                stats.failed += 1
            else:
                stats.calls += 1
                completion.usage = usage
            with transaction(self.conn):
                call_id = self.log.record(
                    key=key,
                    stage=stage,
                    model=self.backend.model_id,
                    request=request,
                    completion=completion,
                    attempts=attempts,
                    error=error,
                    seconds=time.monotonic() - start,
                )
                if completion is not None and commit is not None:
                    commit(value, call_id)  # type: ignore[arg-type]
            return CallResult(value, completion, call_id, cached=False, error=error)

    async def aclose(self) -> None:
        await self.backend.aclose()
