"""Domain profiles: data files (`profiles/<name>.yaml`) plus a prompt folder per domain.

A profile says how the domain's examples look (is there an input text? a boxed final answer?) and
which records the quality heuristics drop. Prompt templates are looked up in `prompts/<domain>/`
first and `prompts/generic/` second, so a domain overrides only what it needs.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Literal

import jinja2
import yaml
from pydantic import BaseModel, ConfigDict, Field

from explore_instruct.errors import UserError


class QualityRules(BaseModel):
    model_config = ConfigDict(extra="forbid")

    min_words: int = 3
    max_words: int = 150
    blacklist: list[str] = Field(default_factory=list)
    require_boxed_answer: bool = False


class Profile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    summary: str
    input: Literal["required", "optional", "none"] = "optional"
    quality: QualityRules = Field(default_factory=QualityRules)


@cache
def load_profile(name: str) -> Profile:
    try:
        text = resources.files("explore_instruct").joinpath("profiles", f"{name}.yaml").read_text("utf-8")
    except FileNotFoundError:
        raise UserError(f"unknown domain profile '{name}'") from None
    return Profile.model_validate(yaml.safe_load(text))


@cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("explore_instruct", "prompts"),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=False,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )


def render_prompt(domain: str, template: str, **context: object) -> str:
    """Render `prompts/<domain>/<template>`, falling back to `prompts/generic/<template>`."""
    env = _environment()
    tpl = env.select_template([f"{domain}/{template}", f"generic/{template}"])
    return tpl.render(**context).strip() + "\n"
