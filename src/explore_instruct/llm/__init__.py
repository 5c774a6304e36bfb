"""The one narrow LLM protocol (`base`), its backends, and the caching, retrying client."""

from explore_instruct.llm.base import (
    LLM,
    Completion,
    CompletionRequest,
    FatalLLMError,
    Message,
    ParseError,
    TransientLLMError,
    Usage,
)

__all__ = [
    "LLM",
    "Completion",
    "CompletionRequest",
    "FatalLLMError",
    "Message",
    "ParseError",
    "TransientLLMError",
    "Usage",
]
