"""Build a backend from the fields of a run config's `llm` section."""

from __future__ import annotations

from typing import Any

from explore_instruct.config import LLMConfig, check_base_url
from explore_instruct.errors import UserError
from explore_instruct.llm.base import LLM, StructuredSetting

BACKENDS = ("openai", "local")


def build_backend(
    backend: str,
    *,
    base_url: str | None = None,
    model: str | None = None,
    api_key_env: str | None = None,
    timeout: float = 120.0,
    structured_output: StructuredSetting = "auto",
    model_path: str | None = None,
    n_ctx: int = 4096,
    n_threads: int | None = None,
    extra_body: dict[str, Any] | None = None,
) -> LLM:
    """`openai`: any OpenAI-compatible endpoint (needs base_url and model); `local`: embedded GGUF.

    Backends are imported here, not at module top, so a run on one never loads the other's library.
    """
    if backend == "openai":
        if not base_url:
            raise UserError("llm.base_url is required for the openai backend (e.g. http://127.0.0.1:8000/v1)")
        if not model:
            raise UserError("llm.model is required for the openai backend")
        try:
            base_url = check_base_url(base_url)
        except ValueError as exc:  # the URL itself is not repeated: it may hold a secret
            raise UserError(f"base URL {exc}") from None
        from explore_instruct.llm.openai_compat import OpenAICompatLLM

        return OpenAICompatLLM(
            base_url=base_url,
            model=model,
            api_key_env=api_key_env,
            timeout=timeout,
            structured_output=structured_output,
            extra_body=extra_body,
        )
    if backend == "local":
        from explore_instruct.llm.local import LocalLLM

        return LocalLLM(model_path=model_path, n_ctx=n_ctx, n_threads=n_threads)
    raise UserError(f"llm.backend must be one of {', '.join(BACKENDS)} (got {backend!r})")


def backend_from_config(llm: LLMConfig, *, structured_output: StructuredSetting | None = None) -> LLM:
    """The backend a config's `llm` section describes (`structured_output` overrides the section's)."""
    if llm.endpoints:
        return _pool_from_config(llm, structured_output or llm.structured_output)
    return build_backend(
        llm.backend,
        base_url=llm.base_url,
        model=llm.model,
        api_key_env=llm.api_key_env,
        timeout=llm.timeout,
        structured_output=structured_output or llm.structured_output,
        model_path=llm.model_path,
    )


def _pool_from_config(llm: LLMConfig, structured_output: StructuredSetting) -> LLM:
    """One OpenAI-compatible backend per endpoint, behind a pool that spreads the calls."""
    from explore_instruct.llm.openai_compat import redact_url
    from explore_instruct.llm.pool import EndpointPool, Member

    members = []
    for endpoint in llm.endpoints or []:
        backend = build_backend(
            "openai",
            base_url=endpoint.base_url,
            model=llm.model,
            api_key_env=endpoint.api_key_env,
            timeout=llm.timeout,
            structured_output=structured_output,
        )
        members.append(
            Member(redact_url(endpoint.base_url), backend, limit=endpoint.max_concurrency, weight=endpoint.weight)
        )
    return EndpointPool(members, model_id=members[0].backend.model_id)
