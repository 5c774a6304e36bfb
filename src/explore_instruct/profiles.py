"""Domain profiles: data files (`profiles/<name>.yaml`) plus a prompt folder per domain.

A profile says how the domain's examples look (is there an input text? a boxed final answer?) and
which records and task names the quality heuristics drop. A profile may say `extends: <other>` to
take the other's settings and override only what differs (lists are replaced, not merged). Prompt
templates are looked up in `prompts/<domain>/` first and `prompts/generic/` second, so a domain
overrides only what it needs.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any, Literal

import jinja2
import yaml
from pydantic import BaseModel, ConfigDict, Field

from explore_instruct.errors import UserError


class QualityRules(BaseModel):
    """What a kept example must look like."""

    model_config = ConfigDict(extra="forbid")

    min_words: int = 3
    max_words: int = 150
    blacklist: list[str] = Field(default_factory=list)
    require_boxed_answer: bool = False
    # Fewer output words than this is junk ("more"), unless the output is as long as the input
    # (a one-word spelling fix of a one-word input is fine).
    min_output_words: int = 1
    # Keys of the reply format: a field holding `'subtasks': [` is a piece of the JSON, not data.
    format_keys: list[str] = Field(default_factory=list)
    # Chat-template text (system lines, special tokens) a weak model echoes into a field.
    template_text: list[str] = Field(default_factory=list)
    # An instruction or output of at least this many words found in the prompt's own text is an echo.
    prompt_echo_min_words: int = 4


class TaskNameRules(BaseModel):
    """What an accepted subtask name must look like."""

    model_config = ConfigDict(extra="forbid")

    min_words: int = 1
    max_words: int = 8
    # Characters of markup, code or templates that never belong in a task name.
    forbidden_chars: str = "<>{}[]|`*\\"
    # A name made only of these words (and numbers or single letters) is a placeholder: "Task 1".
    placeholder_words: list[str] = Field(default_factory=list)
    # A word joined by one of these, or ending in `.<extension>`, is a code or file name: "description_list.json".
    identifier_chars: str = ""
    file_extensions: list[str] = Field(default_factory=list)
    # A name made only of these words is a command someone could type, not a task: "make".
    command_words: list[str] = Field(default_factory=list)


class Profile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    summary: str
    input: Literal["required", "optional", "none"] = "optional"
    quality: QualityRules = Field(default_factory=QualityRules)
    task_names: TaskNameRules = Field(default_factory=TaskNameRules)
    # What the rate stage's judge checks, one criterion a line (prompts/<domain>/rate.txt lists them).
    rubric: list[str] = Field(default_factory=list)


def _read(name: str, seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """The profile's YAML with its `extends` chain merged in (sections merged key by key)."""
    if name in seen:
        raise UserError(f"domain profile '{name}' extends itself ({' -> '.join((*seen, name))})")
    try:
        text = resources.files("explore_instruct").joinpath("profiles", f"{name}.yaml").read_text("utf-8")
    except FileNotFoundError:
        raise UserError(f"unknown domain profile '{name}'") from None
    data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise UserError(f"profiles/{name}.yaml: expected a mapping")
    base_name = data.pop("extends", None)
    if base_name is None:
        return data
    merged = _read(str(base_name), (*seen, name))
    for key, value in data.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


@cache
def load_profile(name: str) -> Profile:
    return Profile.model_validate(_read(name))


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
