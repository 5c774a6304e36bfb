"""A scripted backend for tests and dry runs: replies come from a function or a list, no model needed."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any

from explore_instruct.llm.base import Backend, Capabilities, Completion, CompletionRequest, Usage

Reply = str | Completion | BaseException
Responder = Callable[[CompletionRequest], Reply]


class ScriptedLLM(Backend):
    """Answers each request with `responder(request)` (or the next item of a list).

    A reply that is an exception is raised instead, which is how tests simulate 429s, 5xx and
    timeouts. Every request received is kept in `requests`, in order, so tests can count calls.
    `capabilities` lets a test stand in for a backend that has some (e.g. structured output).
    """

    def __init__(
        self,
        responder: Responder | Iterable[Reply],
        *,
        model_id: str = "scripted",
        latency: float = 0.0,
        capabilities: Capabilities | None = None,
    ) -> None:
        if callable(responder):
            self._responder: Responder = responder
        else:
            queue = list(responder)

            def next_reply(_: CompletionRequest) -> Reply:
                if not queue:
                    raise AssertionError("ScriptedLLM ran out of scripted replies")
                return queue.pop(0)

            self._responder = next_reply
        self.model_id = model_id
        self.capabilities = capabilities or Capabilities()
        self.latency = latency
        self.requests: list[CompletionRequest] = []

    async def complete(self, request: CompletionRequest) -> Completion:
        self.requests.append(request)
        if self.latency:
            await asyncio.sleep(self.latency)
        reply: Any = self._responder(request)
        if isinstance(reply, BaseException):
            raise reply
        if isinstance(reply, Completion):
            return reply
        text = str(reply)
        prompt_tokens = sum(len(m.content.split()) for m in request.messages)
        return Completion(text, Usage(prompt_tokens, len(text.split())), "stop")
