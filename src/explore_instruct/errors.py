"""Errors that end a command with a clear one-line message.

`UserError` is bad input (a config, a file, a flag): the CLI prints its message and exits with code 2.
A message names settings by their setting names (`learning_rate`, `resume`), never by a flag; the
names it uses are listed in `settings`, and the CLI rewrites each to its flag when it prints.
`RunStopped` is a fault the run cannot work around (endpoint unreachable, credentials refused).
"""

from collections.abc import Iterable


class UserError(Exception):
    """Bad input from the user. The message names the file, field or line; exit code 2."""

    exit_code = 2

    def __init__(self, *args: object, settings: Iterable[str] = ()) -> None:
        super().__init__(*args)
        self.settings = tuple(settings)  # the setting names the message uses, as written in it


class RunStopped(Exception):
    """The run cannot go on (e.g. the LLM endpoint is unreachable); finished work is kept. Exit code 1."""

    exit_code = 1

    def __init__(self, *args: object, settings: Iterable[str] = ()) -> None:
        super().__init__(*args)
        self.settings = tuple(settings)


class MissingExtra(UserError):
    """Optional dependency groups are not installed: names each with a module it lacks, and the install line."""

    def __init__(self, extra: str | list[str], module: str | list[str], needed_by: str = "this command") -> None:
        from explore_instruct.installation import install_command

        extras = [extra] if isinstance(extra, str) else extra
        modules = [module] if isinstance(module, str) else module
        quoted = ", ".join(f"'{e}'" for e in extras)
        what = f"the {quoted} extra{'s' if len(extras) > 1 else ''}"
        verb = "is" if len(modules) == 1 else "are"
        super().__init__(
            f"{needed_by} needs {what} ({', '.join(modules)} {verb} not installed): {install_command(extras)}"
        )
