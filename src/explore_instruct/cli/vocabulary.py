"""One name per concept across every command, and the old spellings kept as hidden aliases.

The canonical option names follow the run config's field names where one exists (`--base-url` is
`llm.base_url`, `--max-concurrency` is `llm.max_concurrency`), so a flag and a `--set` mean the same.
Older spellings still work on every command that has the canonical option, but never show in `--help`:
`AliasedCommand` rewrites them before parsing.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from typer.core import TyperCommand

# old spelling -> canonical spelling
OLD_SPELLINGS: dict[str, str] = {
    "--endpoint": "--base-url",
    "--max-new-tokens": "--max-tokens",
    "--concurrency": "--max-concurrency",
    "--processes": "--workers",
    "--num": "--sample-size",
}


def _takes_value(param: Any) -> bool:
    return getattr(param, "param_type_name", "") == "option" and not getattr(param, "is_flag", False)


def rewrite_old_spellings(args: list[str], params: list[Any]) -> list[str]:
    """`args` with each old option spelling replaced by the canonical one `params` declare.

    Values of options are never rewritten (an option that takes a value consumes the next word), nor
    anything after `--`.
    """
    names = {name for p in params for name in getattr(p, "opts", [])}
    with_value = {name for p in params if _takes_value(p) for name in getattr(p, "opts", [])}
    out: list[str] = []
    i = 0
    while i < len(args):
        word = args[i]
        if word == "--":
            out.extend(args[i:])
            break
        head, eq, value = word.partition("=") if word.startswith("--") else (word, "", "")
        new = OLD_SPELLINGS.get(head)
        if new in names:
            head, word = new, f"{new}{eq}{value}"
        out.append(word)
        if head in with_value and not eq and i + 1 < len(args):
            out.append(args[i + 1])
            i += 1
        i += 1
    return out


class AliasedCommand(TyperCommand):
    """A typer command that also accepts the old option spellings in `OLD_SPELLINGS`."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        return super().parse_args(ctx, rewrite_old_spellings(args, self.params))


# The embedding model of the commands that embed outside a run (`filter-file --semantic`, `analyze`):
# the `embeddings` section's fields, each prefixed with `embed-`.
EmbedBackend = Annotated[
    str,
    typer.Option(
        "--embed-backend", help="Embedding backend: local (the bundled GGUF, offline) | openai (/v1/embeddings)."
    ),
]
EmbedBaseUrl = Annotated[
    str | None, typer.Option("--embed-base-url", help="OpenAI-compatible endpoint serving /v1/embeddings.")
]
EmbedModel = Annotated[
    str | None,
    typer.Option("--embed-model", help="Embedding model at the endpoint (local: a GGUF file; default: bundled)."),
]
EmbedApiKeyEnv = Annotated[
    str | None, typer.Option("--embed-api-key-env", help="Environment variable holding the endpoint's API key.")
]
