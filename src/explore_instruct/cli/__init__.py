"""The `explore-instruct` command line: a thin Typer app over the stage functions.

Each command group lives in its own module and registers itself here, so the CLI stays a list of
thin wrappers: parse flags, call a stage function, print a summary.
"""

from __future__ import annotations

import sys

import typer
from rich.console import Console
from rich.markup import escape

from explore_instruct.errors import RunStopped, UserError

app = typer.Typer(
    name="explore-instruct",
    help="Explore a domain as a tree of tasks and build instruction-tuning data from it.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

err_console = Console(stderr=True)


def _register_commands() -> None:
    from explore_instruct.cli import analysis, experiment, filterfile, modeling, pipeline

    for module in (pipeline, filterfile, analysis, modeling, experiment):
        module.register(app)


_register_commands()


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; bad input exits 2 with one line, a stopped run exits 1 with one line."""
    try:
        app(args=argv, standalone_mode=False)
    except UserError as exc:
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return exc.exit_code
    except RunStopped as exc:
        err_console.print(f"[bold red]stopped:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return exc.exit_code
    except typer.Exit as exc:
        return exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        err_console.print("interrupted: finished work is saved (a run continues with --resume)")
        return 130
    except Exception as exc:  # click usage errors
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            return 2
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
