"""Import guards for the optional extras: a missing package ends the command with the install line."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Mapping, Sequence

from explore_instruct.errors import MissingExtra

TRAIN_MODULES = ("torch", "transformers", "trl", "peft", "accelerate", "datasets")


def require(*modules: str, extra: str = "train") -> None:
    """Raise MissingExtra naming the first of `modules` that cannot be imported."""
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            raise MissingExtra(extra, name) from None


def installed(module: str) -> bool:
    """Whether `module` can be imported, found without importing it (torch alone takes seconds)."""
    if module in sys.modules:
        return sys.modules[module] is not None  # None: a blocked import, as tests set it
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def require_extras(needs: Mapping[str, Sequence[str]], needed_by: str) -> None:
    """One MissingExtra naming every extra in `needs` (extra -> its modules) that lacks a module."""
    missing = {extra: next((m for m in modules if not installed(m)), None) for extra, modules in needs.items()}
    lacking = {extra: module for extra, module in missing.items() if module is not None}
    if lacking:
        raise MissingExtra(sorted(lacking), [lacking[e] for e in sorted(lacking)], needed_by=needed_by)
