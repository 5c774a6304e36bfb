"""Backend for any OpenAI-compatible chat endpoint: OpenAI, vLLM, SGLang, Ollama, llama.cpp servers.

It speaks through the official `openai` SDK with the SDK's own retries switched off: retries, backoff
and the cache belong to `client.py`. This module only turns a request into one HTTP call and sorts
the SDK's exceptions into the protocol's two kinds: transient (worth a retry) and fatal (stop the run).

Structured output differs between servers, so the mode is configurable and, in "auto", discovered:
`json_schema` first (OpenAI, vLLM, SGLang, Ollama), then `json_object` with a `schema` (what
`python -m llama_cpp.server` takes; it answers HTTP 500 to `json_schema`), then plain text, where the
prompt asks for the labelled text format and the caller's tolerant parser reads it. The mode found
is kept in the run (`remember_modes`), so a resumed process and its batch lines start from it.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import os
import re
import time
import urllib.parse
from typing import Any

import numpy as np
import openai
from openai import AsyncOpenAI

from explore_instruct import __version__
from explore_instruct.config import ENV_NAME_RULE, looks_like_key
from explore_instruct.errors import UserError
from explore_instruct.llm.base import (
    Backend,
    Capabilities,
    Completion,
    CompletionRequest,
    FatalLLMError,
    ModeMemory,
    RetryReason,
    StructuredMode,
    StructuredSetting,
    TransientLLMError,
    Usage,
)
from explore_instruct.llm.embeddings import EmbedResult, normalise

# The order "auto" tries modes in: the most precise first.
_FALLBACK_ORDER: tuple[StructuredMode, ...] = ("json_schema", "json_object", "text")
# Words in an error body that show the server objected to `response_format` rather than to the prompt.
_FORMAT_WORDS = re.compile(r"response_format|json_schema|json_object|schema|grammar", re.IGNORECASE)
# Local servers ignore the key, but the SDK refuses to start without one.
_PLACEHOLDER_KEY = "not-needed"


class _GatedClient(AsyncOpenAI):
    """The SDK client, with every request's headers rebuilt from scratch just before it is sent.

    The SDK adds headers from the environment (OPENAI_ORG_ID, OPENAI_PROJECT_ID, OPENAI_CUSTOM_HEADERS,
    which can even replace Host or User-Agent); none of them may reach a server the config did not
    name them for. So a request carries only what HTTP needs and the one Authorization value the
    config chose. `_prepare_request` is the SDK's hook for the finished request.
    """

    def __init__(self, *, authorization: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._authorization = authorization

    async def _prepare_request(self, request: Any) -> None:
        await super()._prepare_request(request)
        # JSON bytes, or a file upload (multipart, for the Batch API) that must keep its boundary.
        body = request.read()
        multipart = request.headers.get("Content-Type", "").startswith("multipart/form-data")
        headers = {
            "Host": request.url.netloc.decode("ascii"),
            "Accept": "application/json",
            "Accept-Encoding": "gzip, deflate",
            "User-Agent": f"explore-instruct/{__version__}",
            "Authorization": self._authorization,
        }
        if body or request.method not in ("GET", "HEAD"):
            headers["Content-Type"] = request.headers["Content-Type"] if multipart else "application/json"
            headers["Content-Length"] = str(len(body))
        request.headers.clear()
        request.headers.update(headers)


def redact_url(url: str) -> str:
    """The URL without user:password@ and without a query string (either may carry a secret)."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    netloc = parts.hostname or ""
    if parts.port is not None:
        netloc = f"{netloc}:{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def parse_retry_after(headers: Any) -> float | None:
    """Seconds to wait from `retry-after-ms`, or `Retry-After` in seconds or as an HTTP date."""
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(float(ms) / 1000.0, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    value = value.strip()
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(when.timestamp() - time.time(), 0.0)


def _schema_name(name: str) -> str:
    # OpenAI requires ^[a-zA-Z0-9_-]{1,64}$ for json_schema.name.
    cleaned = re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_")[:64]
    return cleaned or "response"


def _error_text(exc: openai.APIStatusError) -> str:
    """A short, single-line description of an HTTP error (the body's message when it has one)."""
    body = exc.body
    message: Any = None
    if isinstance(body, dict):
        inner = body.get("error", body)
        message = inner.get("message") if isinstance(inner, dict) else inner
        if message is None:
            message = body.get("detail") or body.get("message")
    if message is None:
        message = exc.message
    text = " ".join(str(message).split())
    return text[:300]


class OpenAICompatLLM(Backend):
    """One model behind an OpenAI-compatible `/v1/chat/completions` endpoint.

    The API key is read from the environment variable named by `api_key_env` and handed straight to
    the SDK client; it is never kept on this object, in `model_id`, in `repr()` or in error messages.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str | None = None,
        timeout: float = 120.0,
        structured_output: StructuredSetting = "auto",
        extra_body: dict[str, Any] | None = None,
    ) -> None:
        if structured_output not in ("auto", *_FALLBACK_ORDER):
            raise UserError(
                f"llm.structured_output must be one of auto, json_schema, json_object, text (got {structured_output!r})"
            )
        if not model:
            raise UserError("llm.model is required for the openai backend")
        if api_key_env and looks_like_key(api_key_env):  # a pasted key: never repeated in the message
            raise UserError(f"the key's variable (--api-key-env, llm.api_key_env) {ENV_NAME_RULE}")
        if api_key_env:
            api_key = os.environ.get(api_key_env)
            if not api_key:
                raise UserError(f"environment variable {api_key_env} (named by llm.api_key_env) is not set or empty")
        else:
            api_key = _PLACEHOLDER_KEY
        self.model = model
        self.model_id = f"openai:{model}"
        self.base_url = base_url
        self._display_url = redact_url(base_url)
        self._api_key_env = api_key_env
        self.structured_output: StructuredSetting = structured_output
        # It checks itself before a run, sends batches, and holds replies to a schema unless told to send text.
        self.capabilities = Capabilities(check=True, structured_output=structured_output != "text", batch=True)
        self.extra_body = dict(extra_body) if extra_body else None
        # The mode in use for requests with a schema. In "auto" it starts at the top of the fallback
        # order and is confirmed by the first structured request that succeeds.
        self.structured_mode: StructuredMode = "json_schema" if structured_output == "auto" else structured_output
        self._mode_confirmed = structured_output != "auto"
        # Where discovery starts over after a failed walk: the top, or the mode an earlier process found.
        self._start_mode: StructuredMode = self.structured_mode
        self._memory: ModeMemory | None = None
        # Serialises structured requests until the mode is known, so concurrent first calls do not
        # all run the fallback ladder at once.
        self._discovery = asyncio.Lock()
        # The SDK reads unset values from the environment; the gate drops whatever header it derives
        # from there, and Authorization carries the configured key (or the placeholder) only.
        self._client = _GatedClient(
            authorization=f"Bearer {api_key}",
            base_url=base_url,
            api_key=api_key,
            organization="",  # not None: None means "read OPENAI_ORG_ID"
            project="",
            timeout=timeout,
            max_retries=0,
        )

    def __repr__(self) -> str:
        return (
            f"OpenAICompatLLM(base_url={self._display_url!r}, model={self.model!r}, "
            f"structured_output={self.structured_output!r}, structured_mode={self.structured_mode!r})"
        )

    # ------------------------------------------------------------------ protocol

    async def complete(self, request: CompletionRequest) -> Completion:
        if request.json_schema is None or self._mode_confirmed:
            return await self._send(request, self.structured_mode)
        async with self._discovery:
            if self._mode_confirmed:  # another request found it while this one waited
                return await self._send(request, self.structured_mode)
            return await self._discover(request)

    async def aclose(self) -> None:
        await self._client.close()

    def remember_modes(self, memory: ModeMemory) -> None:
        """Start "auto" from the mode `memory` holds for this endpoint, and keep there the one found.

        The remembered mode is where discovery starts, not a certainty: a server that refuses it now
        still gets the modes below it.
        """
        self._memory = memory
        if self.structured_output != "auto":
            return
        known = memory.structured_mode(self._display_url, self.model)
        if known in _FALLBACK_ORDER and not self._mode_confirmed:
            self.structured_mode = self._start_mode = known

    async def check(self) -> None:
        """One cheap call before a run starts: raise FatalLLMError with one clear line if the
        endpoint cannot be reached, refuses the key, or does not serve the model.

        A busy server (429) counts as reachable: rate limits are the client's business. A server that
        answers for a model it does not list (llama.cpp serves whatever it loaded under any name)
        passes with a warning naming the model(s) it reports, since the name may be a typo.
        """
        listed: list[str] | None = None
        try:
            page = await self._client.models.list()
            listed = [m.id for m in page.data]
            if self.model in listed:
                return
        except openai.APIStatusError as exc:
            if exc.status_code in (401, 403):
                raise self._fatal_or_transient(exc) from exc
            if exc.status_code == 429:
                return
            # 404 (no /models route) or a failing listing: the completion probe below decides.
        except openai.APIConnectionError as exc:  # timeouts included
            raise FatalLLMError(self._unreachable(exc)) from exc
        except (openai.APIResponseValidationError, ValueError):
            pass  # an odd listing: the probe decides
        # Not listed (some servers list aliases only; llama.cpp serves whatever it loaded): ask once.
        probe = CompletionRequest.chat("Say OK.", max_tokens=1, temperature=0.0)
        try:
            reply = await self._client.chat.completions.create(**self._params(probe, "text"))
        except openai.APIStatusError as exc:
            if exc.status_code == 429:
                return
            if exc.status_code in (401, 403, 404):
                raise self._fatal_or_transient(exc) from exc
            raise FatalLLMError(
                f"{self._display_url} did not answer a test request (HTTP {exc.status_code}): {_error_text(exc)}"
            ) from exc
        except openai.APIConnectionError as exc:
            raise FatalLLMError(self._unreachable(exc)) from exc
        except (openai.APIResponseValidationError, ValueError) as exc:
            raise FatalLLMError(
                f"{self._display_url} did not answer a test request with a chat completion: {type(exc).__name__}"
            ) from exc
        note = served_model_note(self._display_url, self.model, listed, getattr(reply, "model", None))
        if note:
            logging.getLogger(__name__).warning(note)

    def batch_api(self) -> OpenAICompatLLM:
        """This backend: its SDK client reaches the Batch API, and `chat_body` writes each line."""
        return self

    @property
    def sdk(self) -> AsyncOpenAI:
        """The gated SDK client, for the Batch API (files and batches pass the same header gate)."""
        return self._client

    def chat_body(self, request: CompletionRequest) -> dict[str, Any]:
        """The JSON body `complete` would send now, for a batch line (no discovery: "auto" means the
        mode found so far, json_schema when nothing was sent yet)."""
        params = self._params(request, self.structured_mode)
        extra = params.pop("extra_body", None) or {}
        return {**params, **extra}

    # ------------------------------------------------------------------ internals

    async def _discover(self, request: CompletionRequest) -> Completion:
        """Walk the fallback order from the current mode until the server accepts a structured request."""
        start = _FALLBACK_ORDER.index(self.structured_mode)
        rejections: list[str] = []
        for mode in _FALLBACK_ORDER[start:]:
            try:
                completion = await self._send(request, mode, discovering=True)
            except _FormatRejected as exc:
                rejections.append(f"{mode}: {exc}")
                continue
            self.structured_mode = mode
            self._mode_confirmed = True
            if self._memory is not None:
                self._memory.remember_structured_mode(self._display_url, self.model, mode)
            return completion
        # Every mode failed, text included, so the server is failing rather than rejecting a format
        # (a plain 500 during the first call). Start over next time and let the client retry.
        self.structured_mode = self._start_mode
        raise TransientLLMError(f"{self._display_url} failed every structured-output mode: {'; '.join(rejections)}")

    def _params(self, request: CompletionRequest, mode: StructuredMode) -> dict[str, Any]:
        params: dict[str, Any] = {"model": self.model, **request.chat_params()}
        if request.json_schema is not None:
            if mode == "json_schema":
                params["response_format"] = {
                    "type": "json_schema",
                    # strict=False: OpenAI's strict mode rejects minItems/maxItems and optional fields.
                    "json_schema": {
                        "name": _schema_name(request.schema_name),
                        "schema": request.json_schema,
                        "strict": False,
                    },
                }
            elif mode == "json_object":
                params["response_format"] = {"type": "json_object", "schema": request.json_schema}
        if self.extra_body:
            params["extra_body"] = self.extra_body
        return params

    async def _send(self, request: CompletionRequest, mode: StructuredMode, *, discovering: bool = False) -> Completion:
        structured = request.json_schema is not None and mode != "text"
        try:
            response = await self._client.chat.completions.create(**self._params(request, mode))
        except openai.APIStatusError as exc:
            if structured and discovering and self._is_format_rejection(exc):
                raise _FormatRejected(f"HTTP {exc.status_code} {_error_text(exc)}") from exc
            if discovering and mode == "text" and exc.status_code >= 500:
                raise _FormatRejected(f"HTTP {exc.status_code} {_error_text(exc)}") from exc
            raise self._fatal_or_transient(exc) from exc
        except (openai.APIConnectionError, openai.APIResponseValidationError, ValueError) as exc:
            raise self.sdk_fault(exc) from exc
        return self._to_completion(response)

    def sdk_fault(self, exc: Exception) -> Exception:
        """The protocol's error for an exception the SDK raised: transient (retry) or fatal (stop)."""
        if isinstance(exc, openai.APIStatusError):
            return self._fatal_or_transient(exc)
        if isinstance(exc, openai.APITimeoutError):  # subclass of APIConnectionError: test it first
            return TransientLLMError(f"timed out waiting for {self._display_url}", reason=RetryReason.TIMEOUT)
        if isinstance(exc, openai.APIConnectionError):
            return TransientLLMError(self._unreachable(exc), reason=RetryReason.CONNECTION)
        # A 200 whose body is not what was asked for (truncated or malformed JSON): a server glitch.
        return TransientLLMError(
            f"malformed reply from {self._display_url}: {type(exc).__name__}", reason=RetryReason.BAD_BODY
        )

    def _to_completion(self, response: Any) -> Completion:
        choices = getattr(response, "choices", None)
        if not choices:
            raise TransientLLMError(f"reply from {self._display_url} has no choices", reason=RetryReason.BAD_BODY)
        choice = choices[0]
        message = getattr(choice, "message", None)
        text = getattr(message, "content", None) or ""
        usage = getattr(response, "usage", None)
        return Completion(
            text=text,
            usage=Usage(
                prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
                completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
            ),
            finish_reason=getattr(choice, "finish_reason", None),
        )

    @staticmethod
    def _is_format_rejection(exc: openai.APIStatusError) -> bool:
        """Did the server refuse the `response_format` (rather than fail or refuse the request)?"""
        if exc.status_code >= 500:
            # llama_cpp.server answers 500 to json_schema with no useful text; during discovery any
            # 500 counts as a rejection (the ladder ends at text, which a healthy server accepts).
            return True
        if exc.status_code in (400, 422):
            return bool(_FORMAT_WORDS.search(_error_text(exc)))
        return False

    def _fatal_or_transient(self, exc: openai.APIStatusError) -> Exception:
        status = exc.status_code
        detail = _error_text(exc)
        if isinstance(exc, openai.RateLimitError) or status == 429:
            return TransientLLMError(
                f"rate limited by {self._display_url} (HTTP 429): {detail}",
                retry_after=parse_retry_after(exc.response.headers),
                reason=RetryReason.RATE_LIMITED,
            )
        if status in (401, 403):
            source = f"from ${self._api_key_env}" if self._api_key_env else "none set: llm.api_key_env"
            return FatalLLMError(
                f"{self._display_url} refused the credentials (HTTP {status}, API key {source}): {detail}"
            )
        if status == 404:
            return FatalLLMError(
                f"{self._display_url} has no model {self.model!r} or no such route (HTTP 404): {detail}"
            )
        # 5xx, 408, 409, and 400/413/422 on one request (e.g. a prompt over the context length): the
        # client retries, then records the call as failed and the run goes on.
        return TransientLLMError(
            f"{self._display_url} answered HTTP {status}: {detail}",
            retry_after=parse_retry_after(exc.response.headers),
            reason=RetryReason.SERVER_ERROR if status >= 500 else RetryReason.REJECTED,
        )

    def _unreachable(self, exc: Exception) -> str:
        cause = exc.__cause__ or exc
        reason = " ".join(str(cause).split())[:200] or type(cause).__name__
        return f"cannot reach {self._display_url}: {reason}"


class OpenAICompatEmbedder:
    """One embedding model behind an OpenAI-compatible `/v1/embeddings` endpoint (OpenAI, vLLM,
    llama.cpp's server, Ollama). The SDK client, its header gate, the key handling and the sorting of
    errors are the chat backend's: this class holds one and sends `embeddings.create` through it."""

    def __init__(self, base_url: str, model: str, api_key_env: str | None = None, timeout: float = 120.0) -> None:
        self._chat = OpenAICompatLLM(base_url, model, api_key_env=api_key_env, timeout=timeout)
        self.model = model
        self.model_id = f"openai-embed:{model}"

    def __repr__(self) -> str:
        return f"OpenAICompatEmbedder(base_url={self._chat._display_url!r}, model={self.model!r})"

    async def embed(self, texts: list[str]) -> EmbedResult:
        try:
            response = await self._chat.sdk.embeddings.create(model=self.model, input=texts, encoding_format="float")
            # Servers may answer out of order: each item names its input's index.
            items = sorted(response.data, key=lambda d: d.index)
            vectors = np.array([d.embedding for d in items], dtype=np.float32)
        except (openai.OpenAIError, ValueError, TypeError, AttributeError) as exc:
            raise self._chat.sdk_fault(exc) from exc
        if vectors.ndim != 2 or len(vectors) != len(texts):
            raise TransientLLMError(
                f"{self._chat._display_url} returned {len(vectors)} embeddings for {len(texts)} texts",
                reason=RetryReason.BAD_BODY,
            )
        usage = getattr(response, "usage", None)
        return EmbedResult(normalise(vectors), int(getattr(usage, "prompt_tokens", 0) or 0))

    async def aclose(self) -> None:
        await self._chat.aclose()


def served_model_note(url: str, asked: str, listed: list[str] | None, answered: Any) -> str | None:
    """A warning when a server answered for `asked` but reports other models (None when it agrees).

    `listed` is what GET /models returned (None: no listing), `answered` the `model` of the reply.
    Not a failure: servers that serve one model under any name are fine to use, but a mistyped
    --model would otherwise pass unnoticed and label the cache and results with the wrong name.
    """
    answered = answered if isinstance(answered, str) and answered else None
    if listed and asked not in listed:
        shown = ", ".join(repr(m) for m in listed[:5]) + (f" and {len(listed) - 5} more" if len(listed) > 5 else "")
        said = f"; the reply came from {answered!r}" if answered and answered not in (asked, *listed) else ""
        return (
            f"warning: {url} does not list model {asked!r} (it lists {shown}) but answered for it{said}: "
            "it may serve whatever it loaded under any name; check the model name given"
        )
    if answered and not answered.startswith(asked):  # "gpt-4o-2024-08-06" answering "gpt-4o" agrees
        return (
            f"warning: {url} answered a request for model {asked!r} as model {answered!r}; check the model name given"
        )
    return None


class _FormatRejected(Exception):
    """Internal: the server refused this structured-output mode; try the next one."""
