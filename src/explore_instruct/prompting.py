"""Prompt building: a run's requests as pure functions of its config and domain profile.

Nothing here reads or writes a run directory, so the dry run (`estimate.py`) renders the very
requests a run would send without creating one, and a stage renders them the same way.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from explore_instruct.config import LLMConfig, RunConfig
from explore_instruct.llm.base import CompletionRequest
from explore_instruct.profiles import Profile, load_profile, render_prompt


@dataclass(frozen=True)
class PromptBuilder:
    """Renders the run's prompt templates into requests; the profile is read once."""

    config: RunConfig
    profile: Profile

    @classmethod
    def of(cls, config: RunConfig) -> PromptBuilder:
        """The builder of `config`, with its domain's profile."""
        return cls(config, load_profile(config.domain))

    def request(
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
