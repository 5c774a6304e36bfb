"""The client every stage calls: cache, bounded concurrency, retries, call log, usage.

A call goes: cache lookup -> (miss) attempts through a transport, with retries -> parse -> one
transaction that logs the call and writes whatever the caller derived from the reply. A killed
process therefore loses only the calls in flight, and a resumed one finds every finished reply in
the cache.

The rules are written once, here, for every way of sending. A transport only carries an attempt:
`OnlineTransport` (the backend's `complete`, within a concurrency slot and the budget) or the batch
transport of `llm/batch.py` (the attempt becomes a line of a provider batch). Which attempt to make,
whether a reply is usable, when to give up and what the call log says are the client's.

Two identical requests never go out at once: the second waits for the first and takes its reply
from the cache. A transport fault (429, 5xx, timeout, a body that is not a completion) resends the
identical request, so the data does not depend on network luck; only a reply that arrived but is
unusable (unparseable, or truncated unless the caller keeps truncated replies) is retried with
another seed.
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
from typing import Any, Generic, Protocol, TypeVar

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
RESEED_STEP = 7919


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


def fault_kind(reason: str) -> ErrorKind:
    """What a failed attempt's reason says went wrong: an unusable reply (asked again with another
    seed) or no reply at all (the same request is sent again)."""
    if reason == RetryReason.UNPARSEABLE:
        return ErrorKind.UNPARSEABLE
    if reason == RetryReason.TRUNCATED:
        return ErrorKind.TRUNCATED
    return ErrorKind.TRANSPORT


@dataclass
class Fault:
    """Why one attempt gave nothing usable."""

    reason: RetryReason
    message: str
    retry_after: float | None = None
    endpoint: str | None = None  # the pool's endpoint that failed

    @property
    def kind(self) -> ErrorKind:
        return fault_kind(self.reason)


def judge_reply(completion: Completion, parse: Callable[[Completion], T], *, keep_truncated: bool) -> T | Fault:
    """The value of a reply, or why it is unusable: cut at max_tokens (unless the caller keeps such
    replies: a long free-text answer cut at the limit is still the model's answer), or unparseable."""
    if completion.finish_reason == "length" and not keep_truncated:
        return Fault(RetryReason.TRUNCATED, "ParseError: reply truncated at max_tokens")
    try:
        return parse(completion)
    except ParseError as exc:
        return Fault(RetryReason.UNPARSEABLE, f"ParseError: {exc}")


@dataclass(frozen=True)
class Attempt:
    """One attempt of a call: the request as logged, the request sent (its seed moved on after
    unusable replies), and its number counting the attempts earlier processes made."""

    key: str
    request: CompletionRequest
    sent: CompletionRequest
    number: int


@dataclass
class PastAttempts:
    """A call's failed attempts made by an earlier process (a batch line's), which this one continues."""

    count: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    usage: Usage = field(default_factory=Usage)
    last: Fault | None = None


class Transport(Protocol):
    """How an attempt reaches the model. It raises TransientLLMError when no reply came back; it never
    judges a reply, retries or logs (the client does)."""

    # Whether a retry waits the backoff first (online); a batch's turnaround spaces its attempts already.
    paced: bool

    def past(self, key: str) -> PastAttempts:
        """Attempts of `key` that failed in an earlier process and count toward its retries."""
        ...

    async def send(self, attempt: Attempt) -> Completion: ...

    def failed(self, attempt: Attempt, fault: Fault, spent: Usage) -> None:
        """`attempt` gave nothing usable (kept, so a resume counts it)."""
        ...

    def settled(self, key: str, ok: Attempt | None, spent: Usage) -> None:
        """The call of `key` is logged: `ok` is the attempt whose reply was used (None: given up).
        Runs inside the call's transaction."""
        ...


class OnlineTransport:
    """An attempt is one `backend.complete` within a concurrency slot, held back by the budget."""

    paced = True

    def __init__(self, backend: LLM, limit: AdaptiveLimit, budget: Budget | None) -> None:
        self.backend = backend
        self.limit = limit
        self.budget = budget

    def past(self, key: str) -> PastAttempts:
        return PastAttempts()  # an attempt that did not finish is lost with its process

    async def send(self, attempt: Attempt) -> Completion:
        async with self.limit.slot() as epoch:
            # The budget holds back any attempt whose worst case could cross it (BudgetReached stops the run).
            reservation = self.budget.reserve(attempt.sent) if self.budget is not None else None
            used = Usage()  # what the budget is charged: the reply's usage, nothing for a failed attempt
            try:
                completion = await self.backend.complete(attempt.sent)
                used = completion.usage
            except TransientLLMError as exc:
                if exc.reason == RetryReason.TIMEOUT:
                    self.limit.timed_out(epoch)
                raise
            finally:
                if reservation is not None and self.budget is not None:
                    self.budget.settle(reservation, used)
            await self.limit.succeeded()
        return completion

    def failed(self, attempt: Attempt, fault: Fault, spent: Usage) -> None:
        return None

    def settled(self, key: str, ok: Attempt | None, spent: Usage) -> None:
        return None


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
        backend.remember_modes(log)  # what an earlier process learnt about the server is used, not probed again
        self.budget = budget
        self.retry = retry or RetryPolicy()
        self.stats = ClientStats()
        self.limit = AdaptiveLimit(max_concurrency)
        self.online = OnlineTransport(backend, self.limit, budget)
        # Cache key -> the outcome of the call sending it now (None: it ended without one).
        self._in_flight: dict[str, asyncio.Future[CallResult[Any] | None]] = {}

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
        keep_truncated: bool = False,
        transport: Transport | None = None,
    ) -> CallResult[T]:
        """Complete `request`, parse the reply, and commit call + `commit(value, call_id)` atomically.

        `parse` raises ParseError for a malformed reply, which is retried with another seed like a
        truncated one (with `keep_truncated`, a reply cut at max_tokens is used as it is). When retries
        run out the call is logged as failed and `CallResult.error` / `error_kind` say why; only
        FatalLLMError (unreachable endpoint, refused credentials) propagates. `transport` carries the
        attempts (default: online).
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

        done: asyncio.Future[CallResult[Any] | None] = asyncio.get_running_loop().create_future()
        self._in_flight[key] = done
        outcome = None
        try:
            outcome = await self._send(
                request, key, stage, stats, parse, commit, keep_truncated, transport or self.online
            )
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
        keep_truncated: bool,
        transport: Transport,
    ) -> CallResult[T]:
        start = time.monotonic()
        past = transport.past(key)  # a batch line's failed attempts count toward the retries
        usage = Usage(past.usage.prompt_tokens, past.usage.completion_tokens)
        spent_now = Usage()
        reasons: Counter[str] = Counter(past.reasons)
        reseeds = sum(n for reason, n in past.reasons.items() if fault_kind(reason) != ErrorKind.TRANSPORT)
        completion: Completion | None = None
        value: T | None = None
        fault: Fault | None = past.last or Fault(RetryReason.CONNECTION, "no attempt made")
        used: tuple[Attempt, Usage] | None = None  # the attempt whose reply is used, and its tokens
        attempts = past.count
        for attempt in range(past.count, self.retry.retries + 1):
            attempts = attempt + 1
            if attempt:
                stats.retries += 1
            sent = request
            if reseeds and request.seed is not None:
                sent = dataclasses.replace(request, seed=request.seed + RESEED_STEP * reseeds)
            current = Attempt(key, request, sent, attempts)
            completion, value, fault, spent = await self._attempt(current, parse, keep_truncated, transport)
            usage += spent
            spent_now += spent
            if fault is None:
                used = (current, spent)
                break
            transport.failed(current, fault, spent)
            reasons[str(fault.reason)] += 1
            stats.retry_reasons[str(fault.reason)] += 1
            if fault.kind != ErrorKind.TRANSPORT:
                reseeds += 1  # the reply arrived and was unusable: ask for a different one
            if attempt < self.retry.retries and transport.paced:
                await asyncio.sleep(self.retry.delay(attempt, fault.retry_after))

        stats.usage += spent_now
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
            transport.settled(key, *(used or (None, Usage())))
            if completion is not None and commit is not None:
                commit(value, call_id)  # type: ignore[arg-type]
        return CallResult(value, completion, call_id, cached=False, error=error, error_kind=kind)

    async def _attempt(
        self, attempt: Attempt, parse: Callable[[Completion], T], keep_truncated: bool, transport: Transport
    ) -> tuple[Completion | None, T | None, Fault | None, Usage]:
        """One attempt through `transport`: the reply and its value, or the fault; and the tokens it cost."""
        try:
            completion = await transport.send(attempt)
        except TransientLLMError as exc:
            fault = Fault(exc.reason, f"{type(exc).__name__}: {exc}", exc.retry_after, exc.endpoint)
            return None, None, fault, Usage()
        judged = judge_reply(completion, parse, keep_truncated=keep_truncated)
        if isinstance(judged, Fault):
            return None, None, judged, completion.usage
        return completion, judged, None, completion.usage

    async def aclose(self) -> None:
        await self.backend.aclose()
