"""The `explore-instruct` command line: a thin Typer app over the stage functions.

Each command group lives in its own module and registers itself here, so the CLI stays a list of
thin wrappers: parse flags, call a stage function, print a summary.
"""

from __future__ import annotations

import errno
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from explore_instruct.cli.vocabulary import Group, flag_words
from explore_instruct.errors import RunStopped, UserError
from explore_instruct.text import refuse_invalid

try:  # typer 0.2x bundles its own copy of click, whose exceptions are not click's
    from typer._click.exceptions import ClickException, NoArgsIsHelpError
except ImportError:  # older typer: plain click
    from click.exceptions import ClickException, NoArgsIsHelpError  # type: ignore[assignment]

app = typer.Typer(
    cls=Group,
    name="explore-instruct",
    help="Explore a domain as a tree of tasks and build instruction-tuning data from it.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

err_console = Console(stderr=True)


def _print_version(value: bool) -> None:
    if value:
        from explore_instruct import __version__

        typer.echo(f"explore-instruct {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    pass


def _register_commands() -> None:
    from explore_instruct.cli import (
        analysis,
        batch,
        decontaminate,
        experiment,
        filterfile,
        modeling,
        pipeline,
        publish,
        web,
    )

    for module in (pipeline, filterfile, decontaminate, analysis, modeling, web, experiment, batch, publish):
        module.register(app)


_register_commands()


# Exit code of a run stopped by Ctrl-C (128 + SIGINT), as shells report it.
INTERRUPTED = 130
# OS errors that mean a bad path or permission (the user's to fix: exit 2); any other is a fault (exit 1).
_BAD_PATH_ERRNOS = frozenset(
    {errno.ENOENT, errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.EROFS}
    | {errno.ENAMETOOLONG, errno.ELOOP, errno.EINVAL}
)


def _one_line(kind: str, message: str) -> None:
    text = " ".join(message.split())  # one line, whatever the message held
    err_console.print(f"[bold red]{kind}:[/] {escape(text)}", highlight=False, soft_wrap=True)


def _usage_error(exc: ClickException) -> int:
    """A click usage error (bad flag, missing argument, bad value) as one line naming the command."""
    if isinstance(exc, NoArgsIsHelpError):  # `explore-instruct` (or a group) alone: its help
        exc.show()
        return exc.exit_code
    ctx = getattr(exc, "ctx", None)
    command = ctx.command_path if ctx is not None else "explore-instruct"
    _one_line("error", f"{command}: {exc.format_message()} (see '{command} --help')")
    return 2


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; bad input exits 2 with one line, a stopped run exits 1, Ctrl-C exits 130."""
    try:
        # Bytes that are not UTF-8 arrive as lone surrogates (surrogateescape): no run, log or file could hold them.
        for word in sys.argv[1:] if argv is None else argv:
            refuse_invalid(word, f"the argument {word!r}")
        code = app(args=argv, standalone_mode=False)
    except UserError as exc:
        _one_line("error", flag_words(str(exc), exc.settings))
        return exc.exit_code
    except RunStopped as exc:
        _one_line("stopped", flag_words(str(exc), exc.settings))
        return exc.exit_code
    except ClickException as exc:
        return _usage_error(exc)
    except typer.Exit as exc:
        code = exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        code = INTERRUPTED
    except RecursionError:
        _one_line("error", "input nested too deeply to process")
        return 2
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        _one_line("error", f"{exc.strerror or type(exc).__name__}{where}")
        return 2 if exc.errno in _BAD_PATH_ERRNOS else 1
    # Without standalone mode typer turns a KeyboardInterrupt inside a command into Exit(130) and
    # returns the code, as it does for a command's own typer.Exit: both arrive here as an int.
    if not isinstance(code, int):
        return 0
    if code == INTERRUPTED:
        _one_line("interrupted", _resume_hint(sys.argv[1:] if argv is None else argv))
    return code


def _resume_hint(argv: list[str]) -> str:
    """How to go on after Ctrl-C: `--resume` only for a command that has it (run, experiment, ...)."""
    command = typer.main.get_command(app)
    for word in argv:
        if word.startswith("-"):
            continue
        sub = getattr(command, "commands", {}).get(word)
        if sub is None:
            break
        command = sub
    if any("--resume" in getattr(p, "opts", ()) for p in command.params):
        return "resume with --resume"
    return "stopped before it finished; run the command again"


if __name__ == "__main__":
    sys.exit(main())
