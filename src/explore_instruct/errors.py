"""Errors that end a command with a clear one-line message.

`UserError` is bad input (a config, a file, a flag): the CLI prints its message and exits with code 2.
`RunStopped` is a fault the run cannot work around (endpoint unreachable, credentials refused).
"""


class UserError(Exception):
    """Bad input from the user. The message names the file, field or line; exit code 2."""

    exit_code = 2


class RunStopped(Exception):
    """The run cannot go on (e.g. the LLM endpoint is unreachable); finished work is kept. Exit code 1."""

    exit_code = 1


class MissingExtra(UserError):
    """An optional dependency group is not installed."""

    def __init__(self, extra: str, module: str) -> None:
        super().__init__(
            f"this command needs the '{extra}' extra ({module} is not installed): "
            f"pip install 'explore-instruct[{extra}]'"
        )
