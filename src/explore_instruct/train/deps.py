"""Import guards for the `[train]` extra: a missing package ends the command with the install line."""

from __future__ import annotations

import importlib

from explore_instruct.errors import MissingExtra

TRAIN_MODULES = ("torch", "transformers", "trl", "peft", "accelerate", "datasets")


def require(*modules: str, extra: str = "train") -> None:
    """Raise MissingExtra naming the first of `modules` that cannot be imported."""
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            raise MissingExtra(extra, name) from None
