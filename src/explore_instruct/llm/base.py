"""The LLM protocol every backend implements: one async `complete(request) -> Completion`, and a
`capabilities` value that says what else it can do, so callers ask instead of probing.

Everything else (cache, call log, retries, concurrency, usage accounting) lives in `client.py`, so a
backend only has to turn a request into text. `Backend` gives every optional method a default (a
health check that does nothing, no structured-output memory, no batch submission); a backend
overrides what its `capabilities` promise.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any, Literal, Protocol, runtime_checkable

from explore_instruct.text import repair


@dataclass(frozen=True)
class Message:
    role: str  # "system" | "user" | "assistant"
    content: str


@dataclass(frozen=True)
class CompletionRequest:
    """A full, self-describing request. Its `key()` identifies it in the cache."""

    messages: tuple[Message, ...]
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 1024
    # When set, the backend asks for output matching this JSON schema (or a text format it can parse).
    json_schema: dict[str, Any] | None = None
    schema_name: str = "response"
    # Deterministic per-request seed: lets servers that honour it reproduce, and makes otherwise
    # identical requests (e.g. a repeated exploration round) distinct in the cache.
    seed: int | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["messages"] = [asdict(m) for m in self.messages]
        return d

    def key(self, model_id: str) -> str:
        payload = json.dumps({"model": model_id, **self.to_dict()}, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()

    def chat_params(self) -> dict[str, Any]:
        """The OpenAI-style chat parameters every backend sends: messages, sampling settings, seed."""
        params: dict[str, Any] = {
            "messages": [{"role": m.role, "content": m.content} for m in self.messages],
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_tokens": self.max_tokens,
        }
        if self.seed is not None:
            params["seed"] = self.seed
        return params

    @staticmethod
    def from_chat_body(body: dict[str, Any]) -> CompletionRequest:
        """The request an OpenAI-style chat body was built from (the inverse of what backends send).

        Fake servers in the tests and benchmarks answer by it; `response_format` of either structured
        kind (json_schema, or json_object with a schema) gives back the schema.
        """
        fmt = body.get("response_format") or {}
        schema, name = None, "response"
        if fmt.get("type") == "json_schema":
            schema, name = fmt["json_schema"].get("schema"), fmt["json_schema"].get("name", "response")
        elif fmt.get("type") == "json_object":
            schema = fmt.get("schema")
        return CompletionRequest(
            messages=tuple(Message(m["role"], m["content"]) for m in body["messages"]),
            temperature=body.get("temperature", 1.0),
            top_p=body.get("top_p", 1.0),
            max_tokens=body.get("max_tokens", 1024),
            json_schema=schema,
            schema_name=name,
            seed=body.get("seed"),
        )

    @staticmethod
    def chat(user: str, *, system: str | None = None, **kwargs: Any) -> CompletionRequest:
        messages = ([Message("system", system)] if system else []) + [Message("user", user)]
        return CompletionRequest(messages=tuple(messages), **kwargs)


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def __iadd__(self, other: Usage) -> Usage:
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        return self

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class Completion:
    text: str
    usage: Usage = field(default_factory=Usage)
    finish_reason: str | None = None
    endpoint: str | None = None  # which server of a pool answered (redacted URL); None for one server

    def __post_init__(self) -> None:
        # Model text is repaired where it arrives (text.py): a lone surrogate a server let through
        # becomes U+FFFD, so every reply can be logged, cached and written.
        self.text = repair(self.text)


class RetryReason(StrEnum):
    """Why an attempt failed: the names the call log, the summary and `stats` count retries under.

    The first five are transport faults (the request is resent unchanged); the last two are replies
    that arrived but were unusable (the request may be resent with another seed).
    """

    RATE_LIMITED = "429"
    SERVER_ERROR = "5xx"
    TIMEOUT = "timeout"
    CONNECTION = "connection"
    BAD_BODY = "bad_body"  # a 200 whose body is not a chat completion
    REJECTED = "4xx"  # e.g. a prompt over the context length
    UNPARSEABLE = "unparseable"
    TRUNCATED = "truncated"


class ErrorKind(StrEnum):
    """What finally went wrong with a call whose retries ran out (`CallResult.error_kind`)."""

    TRANSPORT = "transport"  # no usable reply arrived: 429, 5xx, timeout, connection, malformed body
    UNPARSEABLE = "unparseable"  # a reply arrived but is not the records asked for
    TRUNCATED = "truncated"  # a reply arrived but stopped at max_tokens


class TransientLLMError(Exception):
    """A failure worth retrying: 429, 5xx, timeout, dropped connection. `reason` says which."""

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        reason: RetryReason = RetryReason.SERVER_ERROR,
        endpoint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.reason = reason
        self.endpoint = endpoint  # set by a pool: the server that failed (redacted URL)


class FatalLLMError(Exception):
    """A failure no retry can fix: endpoint unreachable, credentials refused, model missing."""


class ParseError(ValueError):
    """The reply could not be turned into the records asked for (malformed or truncated)."""


# How a request with a JSON schema is sent: the OpenAI `json_schema` response format, `json_object`
# with the schema beside it (llama.cpp's server), or plain text the tolerant parser reads.
StructuredMode = Literal["json_schema", "json_object", "text"]
# The setting (`llm.structured_output`): one of the modes, or "auto" (found by trying them in order).
StructuredSetting = Literal["auto", "json_schema", "json_object", "text"]


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do beyond `complete`."""

    check: bool = False  # `check()` tests the endpoint before a run (else it is a no-op)
    structured_output: bool = False  # a request's JSON schema holds the reply to it (grammar or response_format)
    batch: bool = False  # `batch_api()` gives a provider's Batch API and the body of each line


class ModeMemory(Protocol):
    """Where discovered structured-output modes are kept (the call log of the run: `CallLog`)."""

    def structured_mode(self, endpoint: str, model: str) -> str | None: ...

    def remember_structured_mode(self, endpoint: str, model: str, mode: str) -> None: ...


class BatchAPI(Protocol):
    """What a backend with `capabilities.batch` hands a batch transport (`llm/batch.py`)."""

    model: str  # the served model's name (what `vllm run-batch --model` takes)
    base_url: str

    @property
    def sdk(self) -> Any: ...  # the SDK client the Batch API calls go through (files, batches)

    def chat_body(self, request: CompletionRequest) -> dict[str, Any]: ...  # one line's body


@runtime_checkable
class LLM(Protocol):
    """A backend. `model_id` names the model for the cache key and the call log; `capabilities` says
    which of the optional methods do something."""

    model_id: str
    capabilities: Capabilities

    async def complete(self, request: CompletionRequest) -> Completion: ...

    async def check(self) -> None: ...

    def remember_modes(self, memory: ModeMemory) -> None: ...

    def batch_api(self) -> BatchAPI: ...

    async def aclose(self) -> None: ...


class Backend:
    """The defaults of the optional methods: a backend subclasses this and overrides what it can do."""

    model_id: str
    capabilities: Capabilities = Capabilities()

    async def complete(self, request: CompletionRequest) -> Completion:
        raise NotImplementedError

    async def check(self) -> None:
        """Nothing to check: the first call finds out."""

    def remember_modes(self, memory: ModeMemory) -> None:
        """No structured-output mode to remember."""

    def batch_api(self) -> BatchAPI:
        raise FatalLLMError(f"backend {self.model_id} cannot send batches (batch mode needs backend 'openai')")

    async def aclose(self) -> None:
        return None
