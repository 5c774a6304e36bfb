"""What every stage needs, bundled: the store, the LLM client, the config, the profile, progress."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Protocol

from explore_instruct.config import LLMConfig, RunConfig
from explore_instruct.llm.base import CompletionRequest
from explore_instruct.llm.client import LLMClient
from explore_instruct.llm.embed_client import EmbeddingClient
from explore_instruct.llm.embeddings import Embedder
from explore_instruct.profiles import Profile, load_profile, render_prompt
from explore_instruct.runstore import RunStore


class Progress(Protocol):
    """A progress sink; the CLI passes a rich one, the Python API a silent one by default."""

    def start(self, stage: str, total: int | None) -> None: ...

    def advance(self, stage: str, amount: int = 1, *, total: int | None = None) -> None: ...

    def finish(self, stage: str) -> None: ...


class SilentProgress:
    def start(self, stage: str, total: int | None) -> None:
        pass

    def advance(self, stage: str, amount: int = 1, *, total: int | None = None) -> None:
        pass

    def finish(self, stage: str) -> None:
        pass


@dataclass
class RunContext:
    store: RunStore
    config: RunConfig
    client: LLMClient | None = None
    progress: Progress = field(default_factory=SilentProgress)
    # A stage with an endpoint of its own (the rate stage's `rate.llm`) has its client here.
    stage_clients: dict[str, LLMClient] = field(default_factory=dict)
    embedder: Embedder | None = None  # None: built from the config's `embeddings` section when needed
    _embedding_client: EmbeddingClient | None = field(default=None, repr=False)

    def embedding_client(self) -> EmbeddingClient:
        """The run's embedding client: vectors cached in the run, calls logged, under the same budget."""
        if self._embedding_client is None:
            from explore_instruct.cost import Budget
            from explore_instruct.llm.client import RetryPolicy
            from explore_instruct.llm.embeddings import embedder_from_config

            cfg, llm = self.config.embeddings, self.config.llm
            embedder = self.embedder or embedder_from_config(cfg, timeout=llm.timeout)
            self._embedding_client = EmbeddingClient(
                embedder,
                self.store.vectors,
                self.store.calls,
                batch_size=cfg.batch_size,
                max_concurrency=cfg.max_concurrency,
                retry=RetryPolicy(retries=llm.retries),
                budget=self.client.budget if self.client else Budget.from_config(llm, self.store.calls.spent()),
                stats=self.client.stats if self.client else None,
            )
        return self._embedding_client

    async def close_embedder(self) -> None:
        """Free an embedder built from the config (a local model's memory); one passed in stays open."""
        if self._embedding_client is not None and self.embedder is None:
            await self._embedding_client.aclose()
            self._embedding_client = None

    @property
    def profile(self) -> Profile:
        return load_profile(self.config.domain)

    @property
    def output_format(self) -> str:
        """What the prompts ask for: JSON unless the config forces the labelled text format."""
        return "text" if self.config.llm.structured_output == "text" else "json"

    def require_client(self) -> LLMClient:
        if self.client is None:
            raise RuntimeError("this stage needs an LLM client")
        return self.client

    def client_for(self, stage: str) -> LLMClient:
        """The client `stage` calls: its own when it has one, else the run's."""
        return self.stage_clients.get(stage) or self.require_client()

    def prompt_request(
        self,
        template: str,
        *,
        seed: int,
        json_schema: dict[str, Any],
        schema_name: str,
        llm: LLMConfig | None = None,
        **context: Any,
    ) -> CompletionRequest:
        """Render a prompt template of the run's domain into a request with the sampling settings of
        `llm` (default: the run's `llm` section)."""
        llm = llm or self.config.llm
        prompt = render_prompt(
            self.config.domain,
            template,
            domain_summary=self.profile.summary,
            input_rule=self.profile.input,
            output_format="text" if llm.structured_output == "text" else "json",
            **context,
        )
        return CompletionRequest.chat(
            prompt,
            temperature=llm.temperature,
            top_p=llm.top_p,
            max_tokens=llm.max_tokens,
            json_schema=json_schema,
            schema_name=schema_name,
            seed=seed,
        )

    def stable_seed(self, *parts: Any) -> int:
        """A seed derived from the run's seed and `parts`: the same on every run and resume."""
        text = "\x1f".join(str(p) for p in (self.config.seed, *parts))
        return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big") & 0x7FFFFFFF
