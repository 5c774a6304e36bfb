"""One name per concept across every command, and the old spellings kept as hidden aliases.

The canonical option names follow the run config's field names where one exists (`--base-url` is
`llm.base_url`, `--max-concurrency` is `llm.max_concurrency`), so a flag and a `--set` mean the same.
Older spellings still work on every command that has the canonical option, but never show in `--help`:
`AliasedCommand` rewrites them before parsing. Options shared by several commands are defined here once:
`--api-key-env` (a pasted key is refused without being repeated) and `--run-dir`/`-r`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperCommand, TyperGroup

# setting name (`settings.py`'s models, the library's messages) -> its flag, where the flag is not the
# name with dashes. The setting's own spelling is accepted too (a hidden alias below), so a study's
# child process passes every setting under its name.
SETTING_FLAGS: dict[str, str] = {
    "learning_rate": "--lr",
    "lora_target_modules": "--lora-targets",
    "max_new_tokens": "--max-tokens",
    "format": "--judge-format",
}


def flag_of(setting: str) -> str:
    """The flag that sets `setting` (`learning_rate` -> `--lr`, `max_steps` -> `--max-steps`)."""
    return SETTING_FLAGS.get(setting) or "--" + setting.replace("_", "-")


# old spelling -> canonical spelling
OLD_SPELLINGS: dict[str, str] = {
    "--endpoint": "--base-url",
    "--max-new-tokens": "--max-tokens",
    "--concurrency": "--max-concurrency",
    "--processes": "--workers",
    "--num": "--sample-size",
}
# a setting's own name as a flag -> the flag (hidden, like the old spellings)
SETTING_SPELLINGS: dict[str, str] = {"--" + name.replace("_", "-"): flag for name, flag in SETTING_FLAGS.items()}


def flag_words(message: str, settings: tuple[str, ...]) -> str:
    """`message` with each setting name it uses (`settings`) written as the command line's flag."""
    for name in sorted(set(settings), key=len, reverse=True):  # longest first: max_length inside max_length_x
        # A name inside a path or a longer word (`out/`, `seeds.json`, `liger-kernel`) is not the setting.
        message = re.sub(rf"(?<![\w./-]){re.escape(name)}(?![\w/-]|\.\w)", flag_of(name), message)
    return message


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
        new = OLD_SPELLINGS.get(head) or SETTING_SPELLINGS.get(head)
        if new is not None and new in names:
            head, word = new, f"{new}{eq}{value}"
        out.append(word)
        if head in with_value and not eq and i + 1 < len(args):
            out.append(args[i + 1])
            i += 1
        i += 1
    return out


def _untyped_flags(params: list[Any]) -> list[Any]:
    # Typer's help prints a type beside every option, `<bool>` beside a flag too, though a flag takes
    # no value: an empty metavar leaves that column blank for flags.
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    return params


class AliasedCommand(TyperCommand):
    """A typer command that also accepts the old option spellings in `OLD_SPELLINGS` (and `SETTING_SPELLINGS`)."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        return super().parse_args(ctx, rewrite_old_spellings(args, self.params))

    def get_params(self, ctx: Any) -> list[Any]:
        return _untyped_flags(super().get_params(ctx))


class Group(TyperGroup):
    """A command group whose help shows flags the way `AliasedCommand` does."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _untyped_flags(super().get_params(ctx))


def _env_name(value: str | None) -> str | None:
    from explore_instruct.config import ENV_NAME_RULE, looks_like_key

    if value is not None and looks_like_key(value):
        raise typer.BadParameter(ENV_NAME_RULE)  # click names the option, never the value
    return value


def api_key_env_option(help: str) -> Any:
    """`--api-key-env NAME`, the same on every command: a value that looks like a key is refused unechoed."""
    return typer.Option("--api-key-env", help=help, callback=_env_name)


# Every command takes its run directory as `-r RUN_DIR`. The few that once took it as their first
# argument still do, unlisted (`OldRunDir`); `run_dir_given` picks whichever was used.
RunDirOption = Annotated[Path | None, typer.Option("--run-dir", "-r", help="The run directory.")]
OldRunDir = Annotated[Path | None, typer.Argument(metavar="RUN_DIR", hidden=True, show_default=False)]


def run_dir_given(option: Path | None, old_argument: Path | None) -> Path:
    from explore_instruct.errors import UserError

    if option is not None and old_argument is not None:
        raise UserError("give the run directory once, as -r RUN_DIR")
    run_dir = option or old_argument
    if run_dir is None:
        raise UserError("missing the run directory: -r RUN_DIR")
    return run_dir


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
