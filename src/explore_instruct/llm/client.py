"""The client every stage calls: cache, bounded concurrency, retries, call log, usage.

A call goes: cache lookup -> (miss) backend.complete with retries -> parse -> one transaction that
logs the call and writes whatever the caller derived from the reply. A killed process therefore
loses only the calls in flight, and a resumed one finds every finished reply in the cache.

Two identical requests never go out at once: the second waits for the first and takes its reply
from the cache. A transport fault (429, 5xx, timeout, a body that is not a completion) resends the
identical request, so the data does not depend on network luck; only a reply that arrived but is
unusable (unparseable, truncated) is retried with another seed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import sqlite3
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from explore_instruct.cost import Budget
from explore_instruct.llm.base import (
    LLM,
    Completion,
    CompletionRequest,
    ErrorKind,
    ParseError,
    RetryReason,
    TransientLLMError,
    Usage,
)
from explore_instruct.llm.concurrency import AdaptiveLimit
from explore_instruct.runstore import CachedCall, CallLog
from explore_instruct.runstore.connection import transaction

T = TypeVar("T")

# Added to the request seed per unusable reply, so a seeded backend does not repeat it.
_RESEED_STEP = 7919


@dataclass
class StageStats:
    calls: int = 0
    cache_hits: int = 0
    failed: int = 0
    retries: int = 0
    retry_reasons: Counter[str] = field(default_factory=Counter)
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
    error_kind: ErrorKind | None = None  # set with `error`: what the last attempt ran into

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


@dataclass
class _Fault:
    """Why one attempt gave nothing usable."""

    reason: RetryReason
    message: str
    retry_after: float | None = None
    endpoint: str | None = None  # the pool's endpoint that failed

    @property
    def kind(self) -> ErrorKind:
        if self.reason == RetryReason.UNPARSEABLE:
            return ErrorKind.UNPARSEABLE
        if self.reason == RetryReason.TRUNCATED:
            return ErrorKind.TRUNCATED
        return ErrorKind.TRANSPORT


class LLMClient:
    def __init__(
        self,
        backend: LLM,
        log: CallLog,
        *,
        max_concurrency: int = 8,
        retry: RetryPolicy | None = None,
        budget: Budget | None = None,
    ) -> None:
        self.backend = backend
        self.log = log
        remember = getattr(backend, "remember_modes", None)
        if remember is not None:  # what an earlier process learnt about the server is used, not probed again
            remember(log)
        self.budget = budget
        self.retry = retry or RetryPolicy()
        self.stats = ClientStats()
        self.limit = AdaptiveLimit(max_concurrency)
        # Cache key -> the outcome of the call sending it now (None: it ended without one).
        self._in_flight: dict[str, asyncio.Future[CallResult | None]] = {}
        # Ids of calls this session logged outside `call` (batch lines): taking them from the cache is no hit.
        self._logged_outside: set[int] = set()

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

        `parse` raises ParseError for a malformed reply, which is retried with another seed like a
        truncated one. When retries run out the call is logged as failed and `CallResult.error` /
        `error_kind` say why; only FatalLLMError (unreachable endpoint, refused credentials) propagates.
        """
        stats = self.stats.stage(stage)
        key = request.key(self.backend.model_id)
        while True:
            cached = self.log.lookup(key)
            if cached is not None:
                return self._from_cache(cached, stats, parse, commit)
            pending = self._in_flight.get(key)
            if pending is None:
                break
            # The same request is on its way: wait for it rather than pay twice. Its reply lands in
            # the cache (found on the next turn); its failure is this call's failure too.
            outcome = await asyncio.shield(pending)
            if outcome is not None and outcome.failed:
                return CallResult(None, None, outcome.call_id, False, outcome.error, outcome.error_kind)

        done: asyncio.Future[CallResult | None] = asyncio.get_running_loop().create_future()
        self._in_flight[key] = done
        outcome = None
        try:
            outcome = await self._send(request, key, stage, stats, parse, commit)
            return outcome
        finally:
            del self._in_flight[key]
            done.set_result(outcome)

    def _from_cache(
        self,
        cached: CachedCall,
        stats: StageStats,
        parse: Callable[[Completion], T],
        commit: Callable[[T, int], None] | None,
    ) -> CallResult[T]:
        if cached.id in self._logged_outside:
            self._logged_outside.discard(cached.id)
        else:
            stats.cache_hits += 1
        value = parse(cached.completion)  # replies are cached only after they parsed
        if commit is not None:
            with transaction(self.conn):
                commit(value, cached.id)
        return CallResult(value, cached.completion, cached.id, cached=True)

    async def _send(
        self,
        request: CompletionRequest,
        key: str,
        stage: str,
        stats: StageStats,
        parse: Callable[[Completion], T],
        commit: Callable[[T, int], None] | None,
    ) -> CallResult[T]:
        start = time.monotonic()
        usage = Usage()
        reasons: Counter[str] = Counter()
        completion: Completion | None = None
        value: T | None = None
        fault: _Fault | None = _Fault(RetryReason.CONNECTION, "no attempt made")
        reseeds = attempts = 0
        for attempt in range(self.retry.retries + 1):
            attempts = attempt + 1
            if attempt:
                stats.retries += 1
            sent = request
            if reseeds and request.seed is not None:
                sent = dataclasses.replace(request, seed=request.seed + _RESEED_STEP * reseeds)
            completion, value, fault = await self._attempt(sent, parse, usage)
            if fault is None:
                break
            reasons[str(fault.reason)] += 1
            stats.retry_reasons[str(fault.reason)] += 1
            if fault.kind != ErrorKind.TRANSPORT:
                reseeds += 1  # the reply arrived and was unusable: ask for a different one
            if attempt < self.retry.retries:
                await asyncio.sleep(self.retry.delay(attempt, fault.retry_after))

        stats.usage += usage
        if fault is None and completion is not None:
            stats.calls += 1
            completion.usage = usage
        else:
            stats.failed += 1
            completion = None
        error = None if fault is None else fault.message
        kind = None if fault is None else fault.kind
        endpoint = completion.endpoint if completion is not None else (fault.endpoint if fault else None)
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
                retry_reasons=reasons,
                error_kind=kind,
                endpoint=endpoint,
            )
            if completion is not None and commit is not None:
                commit(value, call_id)  # type: ignore[arg-type]
        return CallResult(value, completion, call_id, cached=False, error=error, error_kind=kind)

    async def _attempt(
        self, request: CompletionRequest, parse: Callable[[Completion], T], usage: Usage
    ) -> tuple[Completion | None, T | None, _Fault | None]:
        """One request to the backend within a concurrency slot; a fault instead of a usable reply."""
        async with self.limit.slot() as epoch:
            # The budget holds back any attempt whose worst case could cross it (BudgetReached stops the run).
            reservation = self.budget.reserve(request) if self.budget is not None else None
            used = Usage()  # what the budget is charged: the reply's usage, nothing for a failed attempt
            try:
                completion = await self.backend.complete(request)
                used = completion.usage
            except TransientLLMError as exc:
                if exc.reason == RetryReason.TIMEOUT:
                    self.limit.timed_out(epoch)
                return None, None, _Fault(exc.reason, f"{type(exc).__name__}: {exc}", exc.retry_after, exc.endpoint)
            finally:
                if reservation is not None and self.budget is not None:
                    self.budget.settle(reservation, used)
            await self.limit.succeeded()
        usage += completion.usage
        if completion.finish_reason == "length":
            return None, None, _Fault(RetryReason.TRUNCATED, "ParseError: reply truncated at max_tokens")
        try:
            return completion, parse(completion), None
        except ParseError as exc:
            return None, None, _Fault(RetryReason.UNPARSEABLE, f"ParseError: {exc}")

    def count_logged(
        self, stage: str, call_id: int, completion: Completion | None, attempts: int, retry_reasons: Counter[str]
    ) -> None:
        """Count a call this session logged outside `call` (a batch line) as sent now, not as a cache hit."""
        stats = self.stats.stage(stage)
        stats.retries += attempts - 1
        stats.retry_reasons.update(retry_reasons)
        if completion is None:
            stats.failed += 1
            return
        stats.calls += 1
        stats.usage += completion.usage
        self._logged_outside.add(call_id)

    async def aclose(self) -> None:
        await self.backend.aclose()
