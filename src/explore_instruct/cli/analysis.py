"""Commands of this group (registered into the main app)."""

import typer


def register(app: typer.Typer) -> None:
    """Add this group's commands to `app`."""
