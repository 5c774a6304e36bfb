"""A fault-injecting backend: network luck (429, 5xx, timeouts) on top of a deterministic fake model."""

from __future__ import annotations

from explore_instruct.llm.base import Completion, CompletionRequest, RetryReason, TransientLLMError
from explore_instruct.llm.scripted import ScriptedLLM
from tests.fakes import fake_model

FAULTS = (
    TransientLLMError("HTTP 429", reason=RetryReason.RATE_LIMITED),
    TransientLLMError("HTTP 503", reason=RetryReason.SERVER_ERROR),
    TransientLLMError("timed out", reason=RetryReason.TIMEOUT),
)


class FlakyLLM(ScriptedLLM):
    """Every `every`-th request sent fails with the next transport fault in turn, whatever it asks.

    Which calls are hit depends on the order requests go out, as it would with a real network.
    """

    def __init__(self, every: int = 3, *, latency: float = 0.0) -> None:
        super().__init__(fake_model, latency=latency)
        self.every = every
        self.faults: list[str] = []

    async def complete(self, request: CompletionRequest) -> Completion:
        if (len(self.requests) + 1) % self.every == 0:
            self.requests.append(request)
            fault = FAULTS[len(self.faults) % len(FAULTS)]
            self.faults.append(str(fault.reason))
            raise fault
        return await super().complete(request)
