"""Several servers of one model behind the one LLM protocol (`llm.endpoints`).

Each request goes to the healthy endpoint with the fewest calls in flight relative to its limit and
weight. An endpoint that refuses connections, or answers 5xx several times in a row, is cooled down
(1 s, doubling up to a minute) and then probed with a single request before it gets traffic again.
A request that failed on one endpoint is sent, unchanged, to the next healthy one, so the run goes
on while any endpoint answers; only when every endpoint has failed `dead_after` times in a row does
the pool raise FatalLLMError.

The pool's `model_id` is the model's, so the cache key does not depend on which endpoint answered;
the endpoint (a redacted URL, never a key) is written on the completion for the call log. Each
member is a full backend, so structured-output discovery happens per endpoint (a vLLM replica and
a llama.cpp server can sit in one pool).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field

from explore_instruct.llm.base import (
    LLM,
    Backend,
    Capabilities,
    Completion,
    CompletionRequest,
    FatalLLMError,
    ModeMemory,
    RetryReason,
    TransientLLMError,
)

log = logging.getLogger(__name__)

# Faults that say the server itself is in trouble (not the request): they count toward a cool-down.
_SERVER_FAULTS = (RetryReason.CONNECTION, RetryReason.SERVER_ERROR)


@dataclass
class Member:
    """One endpoint of the pool, with its load and health."""

    name: str  # redacted URL: what logs and `stats` show
    backend: LLM
    limit: int = 8
    weight: float = 1.0
    in_flight: int = 0
    streak: int = 0  # server faults in a row (reset by a success)
    cooled_until: float = 0.0  # monotonic time before which it gets no traffic
    probing: bool = False  # a cooled endpoint's single test request is out
    coolings: int = 0  # cool-downs since the last success: each one twice as long as the one before
    failed_at: float = 0.0  # monotonic time of the last server fault
    calls: int = 0
    failures: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list, repr=False)

    def free(self, now: float) -> bool:
        if now < self.cooled_until:
            return False
        if self.streak and self.was_cooled():
            # Cooled before: one probe at a time until a success shows it is back.
            return not self.probing and self.in_flight == 0
        return self.in_flight < self.limit

    def was_cooled(self) -> bool:
        return self.cooled_until > 0.0

    def load(self) -> float:
        return self.in_flight / (self.limit * self.weight)


class EndpointPool(Backend):
    """An LLM backend over several backends serving the same model."""

    def __init__(
        self,
        members: list[Member],
        model_id: str,
        *,
        failures_to_cool: int = 3,
        base_cooldown: float = 1.0,
        max_cooldown: float = 60.0,
        dead_after: int = 6,
    ) -> None:
        if not members:
            raise ValueError("a pool needs at least one endpoint")
        self.members = members
        self.model_id = model_id
        self.failures_to_cool = failures_to_cool
        self.base_cooldown = base_cooldown
        self.max_cooldown = max_cooldown
        self.dead_after = dead_after
        self._changed = asyncio.Condition()
        # Checked before a run; structured output when every endpoint has it; one batch goes to one server.
        self.capabilities = Capabilities(
            check=True, structured_output=all(m.backend.capabilities.structured_output for m in members)
        )

    def __repr__(self) -> str:
        return f"EndpointPool({', '.join(m.name for m in self.members)})"

    # ------------------------------------------------------------------ protocol

    async def complete(self, request: CompletionRequest) -> Completion:
        tried: set[int] = set()
        last: TransientLLMError | None = None
        while True:
            acquired = await self._acquire(tried)
            if acquired is None:
                break
            member, probe = acquired
            tried.add(id(member))
            start = time.monotonic()
            try:
                completion = await member.backend.complete(request)
            except TransientLLMError as exc:
                exc.endpoint = member.name
                await self._failed(member, exc, probe)
                if exc.reason not in _SERVER_FAULTS:
                    raise  # 429, a rejected prompt, a bad body, a timeout: the client's retry rules apply
                last = exc
                continue  # the server is in trouble: send the same request to another endpoint
            except BaseException:
                await self._release(member, probe)
                raise
            await self._succeeded(member, start, probe)
            completion.endpoint = member.name
            return completion
        if all(m.streak >= self.dead_after for m in self.members):
            raise FatalLLMError(f"all {len(self.members)} endpoints failed {self.dead_after} times in a row: {last}")
        wait = max(0.0, min(m.cooled_until for m in self.members) - time.monotonic())
        message = str(last) if last is not None else "every endpoint is cooling down after failures"
        raise TransientLLMError(message, retry_after=wait or None, reason=RetryReason.CONNECTION)

    def remember_modes(self, memory: ModeMemory) -> None:
        """Each endpoint keeps its own structured-output mode in `memory` (see OpenAICompatLLM)."""
        for member in self.members:
            member.backend.remember_modes(memory)

    async def aclose(self) -> None:
        await asyncio.gather(*(m.backend.aclose() for m in self.members), return_exceptions=True)

    async def check(self) -> None:
        """Check every endpoint before the run; the ones that fail are cooled, and all failing is fatal."""
        # An endpoint whose backend has no check of its own passes (its `check` does nothing).
        results = await asyncio.gather(*(m.backend.check() for m in self.members), return_exceptions=True)
        failed = [(m, r) for m, r in zip(self.members, results, strict=True) if isinstance(r, BaseException)]
        for _, result in failed:
            if not isinstance(result, Exception):
                raise result
        if len(failed) == len(self.members):
            raise FatalLLMError(f"no endpoint of the pool answered: {failed[0][1]}")
        for member, result in failed:
            log.warning("endpoint %s is left out for now: %s", member.name, result)
            member.streak = self.failures_to_cool
            member.failures += 1
            self._cool(member)

    def stats(self) -> list[dict[str, object]]:
        """Calls, failures and mean latency per endpoint in this process."""
        return [
            {
                "endpoint": m.name,
                "calls": m.calls,
                "failures": m.failures,
                "mean_seconds": (m.seconds / m.calls) if m.calls else None,
            }
            for m in self.members
        ]

    # ------------------------------------------------------------------ internals

    async def _acquire(self, tried: set[int]) -> tuple[Member, bool] | None:
        """A slot on the least loaded free endpoint not tried yet; None when every candidate is cooling."""
        async with self._changed:
            while True:
                now = time.monotonic()
                candidates = [m for m in self.members if id(m) not in tried]
                if not candidates or all(now < m.cooled_until for m in candidates):
                    return None
                free = [m for m in candidates if m.free(now)]
                if free:
                    member = min(free, key=Member.load)
                    member.in_flight += 1
                    probe = bool(member.streak and member.was_cooled())
                    member.probing = member.probing or probe
                    return member, probe
                # Busy (or a probe is out): wait for a slot, or for a cool-down to end.
                waits = [m.cooled_until - now for m in candidates if m.cooled_until > now]
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), timeout=min(waits) if waits else None)

    async def _release(self, member: Member, probe: bool) -> None:
        async with self._changed:
            member.in_flight -= 1
            if probe:
                member.probing = False
            self._changed.notify_all()

    async def _succeeded(self, member: Member, started: float, probe: bool) -> None:
        member.calls += 1
        member.seconds += time.monotonic() - started
        # Only a request sent after the last fault shows the endpoint is back (one already on its way
        # when the server went down may still land).
        if started > member.failed_at:
            if member.streak and member.was_cooled():
                log.warning("endpoint %s answers again", member.name)
            member.streak = 0
            member.coolings = 0
            member.cooled_until = 0.0
        await self._release(member, probe)

    async def _failed(self, member: Member, exc: TransientLLMError, probe: bool) -> None:
        member.failures += 1
        if exc.reason in _SERVER_FAULTS:
            member.failed_at = time.monotonic()
            member.streak += 1
            # A refused connection cools at once; 5xx only when repeated (one can be a bad request).
            if exc.reason == RetryReason.CONNECTION or member.streak >= self.failures_to_cool or probe:
                self._cool(member)
        await self._release(member, probe)

    def _cool(self, member: Member) -> None:
        delay = min(self.max_cooldown, self.base_cooldown * 2**member.coolings)
        first = member.coolings == 0
        member.coolings += 1
        member.cooled_until = time.monotonic() + delay
        level = logging.WARNING if first else logging.DEBUG
        log.log(
            level,
            "endpoint %s failed (%d in a row): no traffic for %.0f s, then one probe",
            member.name,
            member.streak,
            delay,
        )
