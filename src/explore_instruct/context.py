"""What every stage needs, bundled: the store, the LLM client, the config, the prompt builder, progress."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from explore_instruct.config import RunConfig
from explore_instruct.llm.client import LLMClient
from explore_instruct.llm.embed_client import EmbeddingClient
from explore_instruct.llm.embeddings import Embedder
from explore_instruct.profiles import Profile
from explore_instruct.prompting import PromptBuilder
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
    _prompts: PromptBuilder | None = field(default=None, repr=False)

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
    def prompts(self) -> PromptBuilder:
        """The run's prompt builder (config and profile only: no store needed to render a request)."""
        if self._prompts is None or self._prompts.config is not self.config:
            self._prompts = PromptBuilder.of(self.config)
        return self._prompts

    @property
    def profile(self) -> Profile:
        return self.prompts.profile

    def require_client(self) -> LLMClient:
        if self.client is None:
            raise RuntimeError("this stage needs an LLM client")
        return self.client

    def client_for(self, stage: str) -> LLMClient:
        """The client `stage` calls: its own when it has one, else the run's."""
        return self.stage_clients.get(stage) or self.require_client()
